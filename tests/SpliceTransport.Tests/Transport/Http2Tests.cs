using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.Transport;

/// <summary>HTTP/2 over TLS (negotiated with ALPN) and cleartext h2c with prior knowledge.</summary>
public class Http2Tests(ITestOutputHelper output)
{
    private const int ConcurrentStreams = 20;
    private const int H2LoadRequests = 200;
    private const int H2LoadClients = 4;

    private static void MapApp(WebApplication app)
    {
        app.MapGet("/", (HttpContext context) => $"{context.Request.Protocol} stream");
        app.MapPost("/echo", async context =>
        {
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer);
            await context.Response.Body.WriteAsync(buffer.ToArray());
        });
    }

    /// <summary>Makes every endpoint of the host HTTP/2 only: h2c with prior knowledge over http://.</summary>
    private static void Http2Only(WebApplicationBuilder builder) =>
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen => listen.Protocols = HttpProtocols.Http2));

    [Fact]
    public async Task Http2IsNegotiatedOverTlsWithAlpn()
    {
        await using var host = await SpliceTestHost.StartAsync(MapApp, configureBuilder: TestCertificates.UseTestCertificate, urls: ["https://127.0.0.1:0"]);
        using var client = host.CreateClient(HttpVersion.Version20, HttpVersionPolicy.RequestVersionExact);

        await AssertHttp2StreamsAsync(host, client);
    }

    [Fact]
    public async Task H2cWithPriorKnowledgeIsServed()
    {
        await using var host = await SpliceTestHost.StartAsync(MapApp, configureBuilder: Http2Only);
        Assert.StartsWith("http://", host.Addresses[0]);
        using var client = host.CreateClient(HttpVersion.Version20, HttpVersionPolicy.RequestVersionExact);

        await AssertHttp2StreamsAsync(host, client);
    }

    /// <summary>One request, then concurrent streams (bodies compared by hash) multiplexed on the same connection.</summary>
    private static async Task AssertHttp2StreamsAsync(SpliceTestHost host, HttpClient client)
    {
        using (var first = await client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            Assert.Equal(HttpVersion.Version20, first.Version);
            TransportAssert.ServedBySplice(first);
            Assert.Equal("HTTP/2 stream", await first.Content.ReadAsStringAsync());
        }

        var tasks = Enumerable.Range(0, ConcurrentStreams).Select(async i =>
        {
            byte[] payload = new byte[100_000 + i * 10_000];
            new Random(i).NextBytes(payload);
            using var response = await client.PostAsync("/echo", new ByteArrayContent(payload));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version20, response.Version);
            TransportAssert.ServedBySplice(response);
            Assert.Equal(TestFiles.Sha256(payload), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        });
        await Task.WhenAll(tasks).WaitAsync(RawHttpConnection.Timeout);

        // Every stream travelled on the one connection the first request opened.
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task H2LoadSucceedsAgainstH2c()
    {
        string? h2load = FindOnPath("h2load");
        if (h2load is null)
        {
            // xunit 2 has no runtime skip; .ci/run installs nghttp2-client, so CI always runs this.
            output.WriteLine("h2load is not installed (apt-get install nghttp2-client); nothing to run.");
            return;
        }
        await using var host = await SpliceTestHost.StartAsync(MapApp, configureBuilder: Http2Only);

        var start = new ProcessStartInfo(h2load)
        {
            ArgumentList = { "-n", H2LoadRequests.ToString(), "-c", H2LoadClients.ToString(), $"http://127.0.0.1:{host.Port}/" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }
        string text = await stdout + await stderr;
        output.WriteLine(text);

        Match requests = Regex.Match(text, @"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored");
        Assert.True(requests.Success, "h2load printed no request summary:\n" + text);
        Assert.Equal(H2LoadRequests.ToString(), requests.Groups[4].Value);
        Assert.Equal("0", requests.Groups[5].Value);
        Assert.Equal("0", requests.Groups[6].Value);
        Match status = Regex.Match(text, @"status codes: (\d+) 2xx");
        Assert.True(status.Success && status.Groups[1].Value == H2LoadRequests.ToString(), "Not every response was 2xx:\n" + text);
        Assert.Equal(0, process.ExitCode);
        // h2load opened its connections on our transport, not Kestrel's sockets.
        Assert.Equal(H2LoadClients, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(directory => Path.Combine(directory, name))
            .FirstOrDefault(File.Exists);
}
