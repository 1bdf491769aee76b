using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// How a connection ends, as on Kestrel's socket transport: an abort resets it (RST), a graceful close sends
/// a FIN after everything that was written. Both are logged at Debug with their event ids.
/// </summary>
public class ShutdownSemanticsTests
{
    private const int WriteFinEventId = 110;
    private const int WriteRstEventId = 111;

    [Fact]
    public async Task AnAbortedConnectionIsReset()
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/abort", (HttpContext context) => context.Abort()));
        using var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync("GET /abort HTTP/1.1\r\nHost: localhost\r\n\r\n");

        var error = await Assert.ThrowsAsync<SocketException>(() => connection.ReadToEndAsync());
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        await WaitForLogAsync(host, WriteRstEventId);
    }

    [Fact]
    public async Task AGracefulCloseSendsEverythingThenAFin()
    {
        byte[] body = new byte[256 * 1024];
        Random.Shared.NextBytes(body);
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/close", async (HttpContext context) =>
        {
            context.Response.Headers.Connection = "close";
            context.Response.ContentLength = body.Length;
            await context.Response.Body.WriteAsync(body);
        }));
        using var connection = await RawHttpConnection.ConnectAsync(host.Port);
        await connection.SendAsync("GET /close HTTP/1.1\r\nHost: localhost\r\n\r\n");

        // ReadToEnd returns only at a clean end of stream: a reset would throw.
        byte[] everything = await connection.ReadToEndAsync();
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(everything.AsSpan(everything.Length - body.Length)));
        await WaitForLogAsync(host, WriteFinEventId);
        Assert.DoesNotContain(host.Logs.Entries, e => e.EventId.Id == WriteRstEventId);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TheNoDelayOptionStandsAfterFileResponsesAndFallbacks(bool noDelay)
    {
        using var files = new TestFiles();
        string path = files.Create("nodelay.bin", 10_000);
        string sha256 = TestFiles.Sha256(path);
        await using var host = await SpliceTestHost.StartAsync(
            app =>
            {
                app.MapGet("/file", (HttpContext context) => context.Response.SendFileAsync(path));
                app.MapGet("/chunked-file", async (HttpContext context) =>
                {
                    await context.Response.StartAsync(); // No Content-Length: the file falls back (chunked).
                    await context.Response.SendFileAsync(path);
                });
                app.MapGet("/nodelay", (HttpContext context) =>
                    context.Features.Get<IConnectionSocketFeature>()!.Socket.NoDelay.ToString());
            },
            options => options.NoDelay = noDelay);
        using var client = host.CreateClient();

        foreach (string request in new[] { "/nodelay", "/file", "/chunked-file", "/file", "/nodelay" })
        {
            using var response = await client.GetAsync(request);
            response.EnsureSuccessStatusCode();
            if (request == "/nodelay")
            {
                Assert.Equal(noDelay.ToString(), await response.Content.ReadAsStringAsync());
            }
            else
            {
                Assert.Equal(sha256, TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
            }
        }
        Assert.Equal(1, host.Metrics.AcceptedConnections);
    }

    private static Task WaitForLogAsync(SpliceTestHost host, int eventId) =>
        Poll.EventuallyAsync(() => host.Logs.Entries.Any(e => e.EventId.Id == eventId && e.Level == LogLevel.Debug),
            () => $"a Debug log with event id {eventId}; the log:\n" + string.Join("\n", host.Logs.Entries), TimeSpan.FromSeconds(10));
}
