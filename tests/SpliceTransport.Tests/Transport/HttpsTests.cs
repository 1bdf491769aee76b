using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>Kestrel's TLS (SslStream over our transport pipe) works on SpliceTransport.</summary>
public class HttpsTests
{
    private static Task<SpliceTestHost> StartHttpsHostAsync() => SpliceTestHost.StartAsync(
        app =>
        {
            app.MapGet("/hello", (HttpContext context) => $"Hello over {context.Request.Scheme}, TLS {context.Features.Get<Microsoft.AspNetCore.Connections.Features.ITlsHandshakeFeature>()?.Protocol}");
            app.MapPost("/echo", async context =>
            {
                using var buffer = new MemoryStream();
                await context.Request.Body.CopyToAsync(buffer);
                await context.Response.Body.WriteAsync(buffer.ToArray());
            });
        },
        configureBuilder: TestCertificates.UseTestCertificate,
        urls: ["https://127.0.0.1:0"]);

    [Fact]
    public async Task HttpsRequestsAreServedOverTls()
    {
        await using var host = await StartHttpsHostAsync();
        Assert.StartsWith("https://", host.Addresses[0]);
        using var client = host.CreateClient();

        for (int i = 0; i < 5; i++)
        {
            using var response = await client.GetAsync("/hello");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            Assert.StartsWith("Hello over https, TLS Tls1", await response.Content.ReadAsStringAsync());
        }

        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task LargeBodiesCrossTlsIntact()
    {
        await using var host = await StartHttpsHostAsync();
        using var client = host.CreateClient();
        byte[] payload = new byte[8 * 1024 * 1024 + 123];
        new Random(7).NextBytes(payload);

        using var response = await client.PostAsync("/echo", new ByteArrayContent(payload));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(TestFiles.Sha256(payload), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task RawSslStreamClientGetsAResponseAndTheCertificate()
    {
        await using var host = await StartHttpsHostAsync();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, host.Port)).WaitAsync(RawHttpConnection.Timeout);
        await using var tls = new SslStream(new NetworkStream(socket, ownsSocket: false), leaveInnerStreamOpen: false, (_, _, _, _) => true);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
        }).WaitAsync(RawHttpConnection.Timeout);
        Assert.Equal(TestCertificates.Localhost.Thumbprint, tls.RemoteCertificate?.GetCertHashString());

        await tls.WriteAsync(Encoding.ASCII.GetBytes("GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
        using var reader = new StreamReader(tls, Encoding.ASCII);
        string response = await reader.ReadToEndAsync().WaitAsync(RawHttpConnection.Timeout);

        Assert.StartsWith("HTTP/1.1 200 OK", response);
        Assert.Contains($"{SpliceTestHost.TransportHeader}: splice", response);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
