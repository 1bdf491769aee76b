using System.Net.Sockets;
using System.Security.Cryptography;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// A client that stops reading a large streamed response stalls the application's writes (the output pipe's
/// MaxWriteBufferSize, then the socket buffers), instead of the server buffering the whole response; when
/// the client reads again, every byte arrives.
/// </summary>
public class BackPressureTests(ITestOutputHelper output)
{
    private const long ResponseSize = 50L * 1024 * 1024;
    private const int ChunkSize = 64 * 1024;

    /// <summary>
    /// Far above what can wait in the pipe (64 KiB), the server's send buffer (at most 4 MiB here, net.core.wmem_max)
    /// and the client's small receive buffer, and far below the 50 MB an unbounded buffer would take.
    /// </summary>
    private const long MaxBufferedWhileStalled = 16L * 1024 * 1024;

    /// <summary>
    /// How long the written count must stay unchanged to count as stalled. A window on purpose: "stopped" has no
    /// event of its own. It cannot fail a correct server: a pause mistaken for the stall only checks the bound
    /// sooner, and a server that buffers without bound passes 16 MiB within the window or never stalls.
    /// </summary>
    private static readonly TimeSpan StallWindow = TimeSpan.FromSeconds(1);

    [Fact]
    public async Task AClientThatStopsReadingStallsTheWriterAndResumingDeliversEveryByte()
    {
        long written = 0;
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/stream", async context =>
        {
            context.Response.ContentLength = ResponseSize;
            byte[] chunk = new byte[ChunkSize];
            var random = new Random(21);
            for (long sent = 0; sent < ResponseSize; sent += ChunkSize)
            {
                random.NextBytes(chunk);
                await context.Response.Body.WriteAsync(chunk);
                await context.Response.Body.FlushAsync();
                Interlocked.Add(ref written, ChunkSize);
            }
        }));

        // A small receive buffer (which also turns off receive-window auto-tuning) keeps the client's share small.
        using var connection = await RawHttpConnection.ConnectAsync(host.Port, RawHttpConnection.ReceiveBuffer(64 * 1024));
        await connection.SendAsync("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n");

        // Read nothing; wait until the handler's writes stop making progress.
        using var timeout = new CancellationTokenSource(RawHttpConnection.Timeout);
        long last = -1;
        DateTime unchangedSince = DateTime.UtcNow;
        while (true)
        {
            Assert.False(timeout.IsCancellationRequested, $"The writer never stalled; {Interlocked.Read(ref written)} bytes written.");
            long now = Interlocked.Read(ref written);
            if (now != last)
            {
                last = now;
                unchangedSince = DateTime.UtcNow;
            }
            else if (DateTime.UtcNow - unchangedSince >= StallWindow)
            {
                break;
            }
            await Task.Delay(50);
        }
        output.WriteLine($"The writer stalled after {last} bytes.");
        Assert.True(last > 0, "The handler wrote nothing at all.");
        Assert.True(last < MaxBufferedWhileStalled, $"The server accepted {last} bytes from the application for a client that reads nothing.");

        // Resume: the whole response arrives, intact.
        (int status, var headers) = await connection.ReadHeadAsync();
        Assert.Equal(200, status);
        Assert.Equal("splice", headers[SpliceTestHost.TransportHeader]);
        string actual = await connection.ReadBodySha256Async(ResponseSize);
        Assert.Equal(ExpectedSha256(), actual);
        // The handler counts a chunk after its flush returns, which can be after the client has read it.
        await Poll.EventuallyAsync(() => Interlocked.Read(ref written) == ResponseSize,
            () => $"the handler to count every byte it wrote ({Interlocked.Read(ref written)} of {ResponseSize})", Waits.Short);
        host.Logs.AssertNoErrors();
    }

    private static string ExpectedSha256()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] chunk = new byte[ChunkSize];
        var random = new Random(21);
        for (long sent = 0; sent < ResponseSize; sent += ChunkSize)
        {
            random.NextBytes(chunk);
            hash.AppendData(chunk);
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }
}
