using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>
/// A real EAGAIN storm, counted through the seam rather than faked: a 4 KiB send buffer on every connection
/// and clients that read 4 KiB at a time make sendfile and sendmsg hit a full socket over and over. Every
/// wait for writability must be woken by the edge that follows, so all downloads finish with the right bytes.
/// </summary>
public class WouldBlockStormTests(FileFixture files, ITestOutputHelper output) : IClassFixture<FileFixture>
{
    private const long FileSize = 4L * 1024 * 1024;

    private const int Clients = 20;

    private const int SmallBuffer = 4096;

    [Fact]
    public async Task TwentyDownloadsThroughTinySocketBuffersAreExact()
    {
        string path = files.Get("storm/file.bin", FileSize);
        string expected = TestFiles.Sha256(path);
        var syscalls = new FaultInjectingSyscalls();
        await using SpliceTestHost host = await FaultKit.StartAsync(syscalls, app =>
        {
            app.Use((context, next) =>
            {
                // Before the static-file handler sends anything: the kernel doubles it, to about 8 KiB.
                context.Features.Get<IConnectionSocketFeature>()!.Socket.SendBufferSize = SmallBuffer;
                return next(context);
            });
            app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true });
        });

        byte[] request = Encoding.ASCII.GetBytes(RawHttpConnection.Get("/storm/file.bin", "Connection: close\r\n"));
        var downloads = new Task<string>[Clients];
        for (int i = 0; i < Clients; i++)
        {
            downloads[i] = DownloadAsync(host.Port, request);
        }
        string[] hashes = await Task.WhenAll(downloads).WaitAsync(Waits.Response);

        Assert.All(hashes, hash => Assert.Equal(expected, hash));
        output.WriteLine($"EAGAIN: sendfile {syscalls.SendFileWouldBlock}, sendmsg {syscalls.SendMessageWouldBlock}");
        Assert.True(syscalls.SendFileWouldBlock + syscalls.SendMessageWouldBlock > 100,
            $"Only {syscalls.SendFileWouldBlock} + {syscalls.SendMessageWouldBlock} EAGAIN results: no storm happened.");
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == Clients, "every download counted as zero-copy");
        await host.Metrics.AssertEventuallyAsync(Clients * FileSize, m => m.ZeroCopyBytes);
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    /// <summary>One download over a socket with a small receive buffer, read 4 KiB at a time; returns the body's SHA-256.</summary>
    private static async Task<string> DownloadAsync(int port, byte[] request)
    {
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(port, RawHttpConnection.ReceiveBuffer(SmallBuffer), Waits.Raw);
        await connection.SendAsync(request);
        (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Response, SmallBuffer);
        Assert.Null(error);
        int bodyStart = FaultKit.EndOfHead(bytes);
        Assert.True(bodyStart > 0, "No response head arrived.");
        string head = Encoding.ASCII.GetString(bytes, 0, bodyStart);
        Assert.StartsWith("HTTP/1.1 200 OK", head);
        Assert.Contains($"{SpliceTestHost.TransportHeader}: splice", head);
        Assert.Equal(FileSize, bytes.Length - bodyStart);
        return TestFiles.Sha256(bytes.AsSpan(bodyStart));
    }
}
