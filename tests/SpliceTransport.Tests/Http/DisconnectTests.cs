using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// A client that goes away in the middle of a large file: the handler learns it through RequestAborted,
/// nothing is logged as an error, the file descriptor is closed, and the server keeps serving.
/// </summary>
public class DisconnectTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 100L * 1024 * 1024;

    private const int ReadBeforeClose = 1024 * 1024;

    [Fact]
    public async Task ClientClosingMidFileAbortsTheRequestAndClosesTheFile()
    {
        string path = files.Get("disconnect/big.bin", FileSize);
        var handled = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await SpliceTestHost.StartAsync(app =>
        {
            app.MapGet("/plaintext", () => "Hello, World!");
            app.MapGet("/big", async (HttpContext context) =>
            {
                string outcome = "completed";
                context.RequestAborted.Register(() => aborted.TrySetResult());
                try
                {
                    await context.Response.SendFileAsync(path, 0, null, context.RequestAborted);
                }
                catch (Exception ex)
                {
                    outcome = ex.GetType().Name;
                }
                finally
                {
                    handled.TrySetResult(outcome);
                }
            });
        });

        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, RawHttpConnection.ReceiveBuffer(64 * 1024), Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/big"));
            Assert.Equal(ReadBeforeClose, await connection.DrainAsync(ReadBeforeClose));
            Assert.Equal(1, OpenFiles.Count(path));
            // Unread data in the receive buffer: closing sends a reset, as a browser tab being closed does.
            connection.Socket.Close();
        }

        string outcome = await handled.Task.WaitAsync(Waits.Short);
        // Kestrel fires RequestAborted asynchronously (on the thread pool), so it may come just after
        // SendFileAsync returned; it must come. SendFileAsync itself either sees the cancellation or returns
        // as Kestrel's writes to an aborted response do, quietly; it never fails otherwise.
        await aborted.Task.WaitAsync(Waits.Short);
        Assert.Contains(outcome, new[] { "completed", nameof(OperationCanceledException), nameof(TaskCanceledException) });
        Assert.Equal(0, await OpenFiles.WaitUntilClosedAsync(path, Waits.Short));
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);

        using HttpClient client = host.CreateClient();
        Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext").WaitAsync(Waits.Short));
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task ClientClosingRightAfterTheRequestLeavesNoErrorAndNoOpenFile()
    {
        // The race the other test cannot reach: the close arrives while the file is being queued.
        string path = files.Get("disconnect/big.bin", FileSize);
        int started = 0;
        int ended = 0;
        await using var host = await SpliceTestHost.StartAsync(app =>
        {
            app.MapGet("/plaintext", () => "Hello, World!");
            app.MapGet("/big", async (HttpContext context) =>
            {
                Interlocked.Increment(ref started);
                try
                {
                    await context.Response.SendFileAsync(path, 0, null, context.RequestAborted);
                }
                catch (OperationCanceledException)
                {
                }
                catch (IOException)
                {
                }
                finally
                {
                    Interlocked.Increment(ref ended);
                }
            });
        });
        const int Clients = 20;
        for (int i = 0; i < Clients; i++)
        {
            await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
            connection.Socket.LingerState = new LingerOption(true, 0); // Close with a reset at once.
            await connection.SendAsync(RawHttpConnection.Get("/big"));
        }
        // A request whose reset arrived before Kestrel read it never reaches a handler; every one that did must end.
        // Once no connection is left, no handler can start any more.
        await Poll.EventuallyAsync(() => host.Metrics.ActiveConnections == 0, () => "every connection closed on the server", Waits.Short);
        await Bytes.EventuallyAsync(() => Volatile.Read(ref ended) == Volatile.Read(ref started), "every started handler ends");
        Assert.Equal(0, await OpenFiles.WaitUntilClosedAsync(path, Waits.Short));
        using HttpClient client = host.CreateClient();
        Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext").WaitAsync(Waits.Short));
        var errors = host.Logs.AtLeast(LogLevel.Error).ToList();
        Assert.True(errors.Count == 0, "Errors were logged:\n" + string.Join("\n", errors));
    }
}
