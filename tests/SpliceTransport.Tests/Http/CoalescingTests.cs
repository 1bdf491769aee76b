using System.Buffers.Binary;
using System.Net.Sockets;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// A small file leaves in the same TCP segment as its headers: the headers go with MSG_MORE and the file with
/// sendfile(2) right behind them, so the kernel sends one segment rather than a header segment and a body segment.
/// The client's own count of the data segments it received (TCP_INFO) says how many there were.
/// </summary>
public class CoalescingTests(FileFixture files) : IClassFixture<FileFixture>
{
    /// <summary>Headers and a file this small fit in one loopback segment (lo's MSS is about 64 KiB).</summary>
    private const int SmallFileSize = 1000;

    /// <summary>TCP_INFO, from linux/tcp.h.</summary>
    private const int TcpInfoOption = 11;

    /// <summary>
    /// Where struct tcp_info holds tcpi_data_segs_in, the segments received that carried data (a u32, Linux 4.6+):
    /// ACKs and a bare FIN are not counted.
    /// </summary>
    private const int DataSegmentsInOffset = 152;

    /// <summary>Room for struct tcp_info (232 bytes on Linux 6.x); the kernel copies what it has.</summary>
    private const int TcpInfoBufferSize = 512;

    [Fact]
    public async Task HeadersAndASmallFileLeaveInOneSegment()
    {
        string path = files.Get("coalescing.bin", SmallFileSize);
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.MapGet("/file", () => Results.File(path, "application/octet-stream")));
        await using var connection = await RawHttpConnection.ConnectAsync(host.Port);

        await connection.SendAsync(RawHttpConnection.Get("/file"));
        RawHttpResponse response = await connection.ReadResponseAsync();

        Assert.Equal(200, response.StatusCode);
        response.AssertServedBySplice();
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(response.Body));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        Assert.Equal(1, DataSegmentsReceived(connection.Socket));
    }

    /// <summary>The control: a response sent in two parts, the second only after the first arrived, is counted as two.</summary>
    [Fact]
    public async Task AResponseSentInTwoPartsArrivesInTwoSegments()
    {
        var sendTheRest = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/parts", async (HttpContext context) =>
        {
            context.Response.ContentLength = 8;
            await context.Response.WriteAsync("head");
            await sendTheRest.Task;
            await context.Response.WriteAsync("tail");
        }));
        await using var connection = await RawHttpConnection.ConnectAsync(host.Port);

        try
        {
            await connection.SendAsync(RawHttpConnection.Get("/parts"));
            (int status, _) = await connection.ReadHeadAsync();
            Assert.Equal(200, status);
            Assert.Equal(4, await connection.DrainAsync(4));
            Assert.Equal(1, DataSegmentsReceived(connection.Socket));
            sendTheRest.SetResult();
            Assert.Equal(4, await connection.DrainAsync(4));
            Assert.Equal(2, DataSegmentsReceived(connection.Socket));
        }
        finally
        {
            // A failed assert must not leave the handler waiting: the host would wait out its stop timeout.
            sendTheRest.TrySetResult();
        }
    }

    private static long DataSegmentsReceived(Socket socket)
    {
        Span<byte> info = stackalloc byte[TcpInfoBufferSize];
        int length = socket.GetRawSocketOption((int)SocketOptionLevel.Tcp, TcpInfoOption, info);
        Assert.True(length >= DataSegmentsInOffset + sizeof(uint), $"TCP_INFO returned {length} bytes, too few for tcpi_data_segs_in");
        return BinaryPrimitives.ReadUInt32LittleEndian(info[DataSegmentsInOffset..]);
    }
}
