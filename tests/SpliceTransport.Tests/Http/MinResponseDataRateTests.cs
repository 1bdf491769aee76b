using Microsoft.AspNetCore.Server.Kestrel.Core;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Kestrel's MinResponseDataRate still governs zero-copy files, with Kestrel's own meaning (each write may take
/// its bytes divided by the rate, at least the grace period, and time saved on earlier writes carries over): a
/// client that stops reading is dropped, and a client that reads steadily above the rate is not, however long
/// the whole file takes. Both are compared with Kestrel's socket transport.
/// </summary>
public class MinResponseDataRateTests(FileFixture files) : IClassFixture<FileFixture>
{
    /// <summary>
    /// High enough that a stalled client is dropped within seconds: Kestrel credits the bytes already taken
    /// into socket buffers (a few MiB on loopback) at this rate, so at 100 KB/s the drop would come only after
    /// about 45 s, on Kestrel's own transport as well.
    /// </summary>
    private const double MinBytesPerSecond = 1024 * 1024;

    /// <summary>Kestrel requires a grace period above its 1 s heartbeat.</summary>
    private static readonly TimeSpan GracePeriod = TimeSpan.FromSeconds(2);

    /// <summary>Bytes in flight in socket buffers plus the grace period, at the rate, with room for a busy machine.</summary>
    private static readonly TimeSpan DroppedWithin = TimeSpan.FromSeconds(20);

    private static void Configure(WebApplicationBuilder builder) =>
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.MinResponseDataRate = new MinDataRate(MinBytesPerSecond, GracePeriod));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AClientThatStopsReadingIsDropped(bool useSplice)
    {
        const long Size = 100L * 1024 * 1024;
        string path = files.Get("rate/big.bin", Size);
        var handled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/f", async (HttpContext context) =>
            {
                try
                {
                    await context.Response.SendFileAsync(path, 0, null, context.RequestAborted);
                }
                catch (OperationCanceledException)
                {
                }
                finally
                {
                    handled.TrySetResult();
                }
            }),
            configureBuilder: Configure, useSplice: useSplice);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, RawHttpConnection.ReceiveBuffer(64 * 1024), Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get("/f"));
        Assert.Equal(1024 * 1024, await connection.DrainAsync(1024 * 1024));

        // The client stops reading; the server must give up on it.
        await handled.Task.WaitAsync(DroppedWithin);
        // What the socket buffers still hold arrives, then the end (a FIN, or a reset): far short of the file.
        long rest = 0;
        try
        {
            rest = (await connection.ReadToEndAsync().WaitAsync(Waits.Short)).Length;
        }
        catch (System.Net.Sockets.SocketException)
        {
        }
        Assert.True(1024 * 1024 + rest < Size, "The whole file arrived: the client was not dropped.");
        if (useSplice)
        {
            Assert.Equal(0, await OpenFiles.WaitUntilClosedAsync(path, Waits.Short));
            host.Logs.AssertNoErrors();
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AClientReadingSteadilyAboveTheRateIsNotDropped(bool useSplice)
    {
        // About 6 s of reading at several times the minimum rate: far longer than the grace period. Kestrel
        // must time the file block by block, not as one flush that has only the grace period to complete.
        const long Size = 40L * 1024 * 1024;
        const int ChunkSize = 64 * 1024;
        TimeSpan pause = TimeSpan.FromMilliseconds(10);
        string path = files.Get("rate/steady.bin", Size);
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/f", (HttpContext context) =>
            {
                // Set here so that Kestrel's own path frames the body the same way (it would otherwise chunk it).
                context.Response.ContentLength = Size;
                return context.Response.SendFileAsync(path, 0, null, context.RequestAborted);
            }),
            configureBuilder: Configure, useSplice: useSplice);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, RawHttpConnection.ReceiveBuffer(64 * 1024), Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get("/f"));

        long received = 0;
        var header = new List<byte>();
        byte[] buffer = new byte[ChunkSize];
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        bool inBody = false;
        while (received < Size)
        {
            int n = await connection.Socket.ReceiveAsync(buffer.AsMemory(), System.Net.Sockets.SocketFlags.None).AsTask().WaitAsync(Waits.Short);
            Assert.True(n > 0, $"The server closed the connection after {received} of {Size} body bytes, although the client read steadily.");
            int start = 0;
            for (; !inBody && start < n; start++)
            {
                header.Add(buffer[start]);
                inBody = header.Count >= 4 && header[^4] == '\r' && header[^3] == '\n' && header[^2] == '\r' && header[^1] == '\n';
            }
            hash.AppendData(buffer, start, n - start);
            received += n - start;
            await Task.Delay(pause);
        }
        Assert.Equal(TestFiles.Sha256(path), Convert.ToHexString(hash.GetHashAndReset()));
        if (useSplice)
        {
            await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "the response is counted");
            await host.Metrics.AssertEventuallyAsync(Size, m => m.ZeroCopyBytes);
            host.Logs.AssertNoErrors();
        }
    }
}
