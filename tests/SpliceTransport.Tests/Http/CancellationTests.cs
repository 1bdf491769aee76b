using System.Diagnostics;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>A 1 GiB sparse file for a client that never reads.</summary>
public sealed class GigabyteFileFixture : IDisposable
{
    public GigabyteFileFixture()
    {
        Path = System.IO.Path.Combine(Files.Root, "sparse-1g.bin");
        using var file = new FileStream(Path, FileMode.Create, FileAccess.Write);
        file.SetLength(1L << 30);
    }

    public TestFiles Files { get; } = new();

    public string Path { get; }

    public void Dispose() => Files.Dispose();
}

/// <summary>
/// Canceling SendFileAsync ends it promptly even while the socket is full and the file is huge: the handler
/// gets an OperationCanceledException and the connection is closed (the response cannot be completed).
/// </summary>
public class CancellationTests(GigabyteFileFixture file) : IClassFixture<GigabyteFileFixture>
{
    /// <summary>On Kestrel's sockets, which have no seam to watch, the send is canceled after this long.</summary>
    private static readonly TimeSpan CancelAfter = TimeSpan.FromSeconds(1);

    /// <summary>Canceling must end the send "at once"; this bound only keeps a broken build from hanging.</summary>
    private static readonly TimeSpan EndsWithin = Waits.Short;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task CancelingEndsTheSendAndClosesTheConnection(bool useSplice)
    {
        var handled = new TaskCompletionSource<(string Outcome, TimeSpan AfterCancel)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var syscalls = new FaultInjectingSyscalls();
        await using var host = await SpliceTestHost.StartAsync(app =>
        {
            app.MapGet("/plaintext", () => "Hello, World!");
            app.MapGet("/f", async (HttpContext context) =>
            {
                using var cts = new CancellationTokenSource();
                var canceledAt = new Stopwatch();
                cts.Token.Register(canceledAt.Start);
                if (useSplice)
                {
                    // Canceled once the send waits for the socket (the client reads nothing), not after a guessed time.
                    _ = CancelWhenTheSendWaitsAsync(syscalls, cts);
                }
                else
                {
                    cts.CancelAfter(CancelAfter);
                }
                string outcome = "completed";
                try
                {
                    await context.Response.SendFileAsync(file.Path, 0, null, cts.Token);
                }
                catch (Exception ex)
                {
                    outcome = ex.GetType().Name;
                }
                handled.TrySetResult((outcome, canceledAt.Elapsed));
            });
        }, configureTransport: options => options.Syscalls = syscalls, useSplice: useSplice);

        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, RawHttpConnection.ReceiveBuffer(64 * 1024), Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get("/f"));
        // The client reads nothing: the server's socket buffer fills and the send waits.
        (string outcome, TimeSpan afterCancel) = await handled.Task.WaitAsync(Waits.Response);
        Assert.True(outcome is nameof(OperationCanceledException) or nameof(TaskCanceledException), $"SendFileAsync ended with {outcome}.");
        Assert.True(afterCancel < EndsWithin, $"SendFileAsync ended {afterCancel} after the cancellation.");
        Assert.True(await connection.WaitForCloseAsync(Waits.Short), "The connection stayed open after the canceled send.");

        using HttpClient client = host.CreateClient();
        Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext").WaitAsync(Waits.Short));
        if (useSplice)
        {
            Assert.Equal(0, host.Metrics.ZeroCopyResponses);
            Assert.Equal(0, await OpenFiles.WaitUntilClosedAsync(file.Path, Waits.Short));
            host.Logs.AssertNoErrors();
        }
    }

    private static async Task CancelWhenTheSendWaitsAsync(FaultInjectingSyscalls syscalls, CancellationTokenSource cancel)
    {
        await Poll.UntilAsync(() => syscalls.SendFileWouldBlock > 0, Waits.Short);
        cancel.Cancel();
    }
}
