using System.Net;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// Kestrel's limits are still enforced on our connections (they live above the transport, but use its abort
/// and close paths). Kestrel writes its own error responses after clearing the app's headers, so for those
/// the transport is identified by the metrics rather than by the test header.
/// </summary>
public class KestrelLimitsTests
{
    private const long MaxBody = 1024 * 1024;

    private static Task<SpliceTestHost> StartAsync(Action<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerLimits> limits) => SpliceTestHost.StartAsync(
        app =>
        {
            app.MapGet("/hello", () => "hello");
            app.MapPost("/upload", async context =>
            {
                long total = 0;
                byte[] buffer = new byte[64 * 1024];
                int n;
                while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
                {
                    total += n;
                }
                await context.Response.WriteAsync(total.ToString());
            });
        },
        configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => limits(kestrel.Limits)));

    [Fact]
    public async Task ATooLargeBodyWithContentLengthGets413()
    {
        await using var host = await StartAsync(l => l.MaxRequestBodySize = MaxBody);
        using var client = host.CreateClient();

        using (var ok = await client.PostAsync("/upload", new ByteArrayContent(new byte[MaxBody])))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            TransportAssert.ServedBySplice(ok);
            Assert.Equal(MaxBody.ToString(), await ok.Content.ReadAsStringAsync());
        }

        // Kestrel answers 413 from the Content-Length alone, before reading a byte of the body, then closes. The
        // request is sent without its body: a client still sending one when the server closes may be reset
        // (unread bytes in the receive queue turn the close into an RST, on Kestrel's sockets as here), and the
        // reset can destroy the 413 before the client reads it. HttpClient raced that way in CI.
        using var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync($"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {MaxBody + 1}\r\n\r\n");
        RawHttpResponse tooLarge = await connection.ReadResponseAsync();
        Assert.Equal(413, tooLarge.StatusCode);
        Assert.True(await connection.WaitForCloseAsync(RawHttpConnection.Timeout), "The connection was not closed after the 413.");
        Assert.Equal(2, host.Metrics.AcceptedConnections);
    }

    [Fact]
    public async Task ATooLargeChunkedBodyGets413()
    {
        await using var host = await StartAsync(l => l.MaxRequestBodySize = MaxBody);
        using var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync("POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
        string chunk = new('a', 64 * 1024);
        // Exactly the limit, then one byte more: the byte that crosses it is the last one sent, so the server has
        // read everything when it answers, and its close is a FIN, never a reset that could destroy the 413.
        for (long sent = 0; sent < MaxBody; sent += chunk.Length)
        {
            await connection.SendAsync($"{chunk.Length:x}\r\n{chunk}\r\n");
        }
        await connection.SendAsync("1\r\na\r\n");

        RawHttpResponse response = await connection.ReadResponseAsync();
        Assert.Equal(413, response.StatusCode);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
    }

    [Fact]
    public async Task TooLargeHeadersGet431()
    {
        await using var host = await StartAsync(l => l.MaxRequestHeadersTotalSize = 8 * 1024);
        using var client = host.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/hello");
        request.Headers.Add("X-Big", new string('b', 16 * 1024));

        using var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.RequestHeaderFieldsTooLarge, response.StatusCode);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
    }

    [Fact]
    public async Task ATooLongRequestLineGets414()
    {
        await using var host = await StartAsync(l => l.MaxRequestLineSize = 1024);
        using var client = host.CreateClient();

        using var response = await client.GetAsync("/hello?" + new string('q', 4096));

        Assert.Equal(HttpStatusCode.RequestUriTooLong, response.StatusCode);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
    }

    [Fact]
    public async Task MaxConcurrentConnectionsClosesTheExtraConnection()
    {
        await using var host = await StartAsync(l => l.MaxConcurrentConnections = 1);
        using var first = await RawHttpConnection.ConnectAsync(host.Port);
        await first.SendAsync("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
        RawHttpResponse response = await first.ReadResponseAsync();
        Assert.Equal("hello", response.BodyText);
        response.AssertServedBySplice();

        // The first connection stays open, so Kestrel refuses the second by closing it at once.
        using var second = await RawHttpConnection.ConnectAsync(host.Port);
        await second.SendAsync("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
        Assert.True(await second.WaitForCloseAsync(RawHttpConnection.Timeout), "The connection over the limit was not closed.");
        Assert.Equal(2, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task RequestHeadersTimeoutClosesASilentConnection()
    {
        await using var host = await StartAsync(l => l.RequestHeadersTimeout = TimeSpan.FromSeconds(1));
        using var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync("GET /hello HTTP/1.1\r\nHost: local");

        // Kestrel's heartbeat notices the stalled headers and aborts the connection through the transport.
        Assert.True(await connection.WaitForCloseAsync(RawHttpConnection.Timeout), "The connection with stalled headers was not closed.");
        Assert.Equal(1, host.Metrics.AcceptedConnections);
    }
}
