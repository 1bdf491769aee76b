using System.Net.Sockets;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Zero-copy files under the transport's other settings: tiny sendfile chunks (many calls, many partial
/// sends), handlers run inline on the event loop, and a Unix domain socket instead of TCP.
/// </summary>
public class TransportOptionsTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 3 * 1024 * 1024 + 5;

    private string File => files.Get("options/file.bin", FileSize);

    private static void MapFile(WebApplication app, string path) =>
        app.MapGet("/f", (HttpContext context, long? from) => context.Response.SendFileAsync(path, from ?? 0, null, context.RequestAborted));

    private async Task AssertDownloadsAsync(SpliceTestHost host, HttpClient client)
    {
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await client.GetByteArrayAsync("/f").WaitAsync(Waits.Response)));
        Assert.Equal(TestFiles.Sha256(File, 12345), TestFiles.Sha256(await client.GetByteArrayAsync("/f?from=12345").WaitAsync(Waits.Response)));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 2, "two zero-copy responses");
        await host.Metrics.AssertEventuallyAsync(2 * FileSize - 12345, m => m.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task TinySendfileChunks()
    {
        string path = File;
        await using var host = await SpliceTestHost.StartAsync(app => MapFile(app, path), options => options.MaxSendFileChunkSize = 4093);
        using HttpClient client = host.CreateClient();
        await AssertDownloadsAsync(host, client);
    }

    [Fact]
    public async Task InlineApplicationScheduling()
    {
        string path = File;
        await using var host = await SpliceTestHost.StartAsync(app => MapFile(app, path),
            options => options.ApplicationSchedulingMode = ApplicationSchedulingMode.Inline);
        using HttpClient client = host.CreateClient();
        await AssertDownloadsAsync(host, client);
    }

    [Fact]
    public async Task OverAUnixDomainSocket()
    {
        string socketPath = Path.Combine(files.Root, "s.sock");
        string path = File;
        await using var host = await SpliceTestHost.StartAsync(app => MapFile(app, path), urls: [$"http://unix:{socketPath}"]);
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        using var client = new HttpClient(handler) { BaseAddress = new Uri("http://localhost"), Timeout = Waits.Response };
        await AssertDownloadsAsync(host, client);
    }
}
