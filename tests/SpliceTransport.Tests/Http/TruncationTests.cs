using Microsoft.Extensions.Logging;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// A file truncated while it is being sent cannot honour its Content-Length: the connection is aborted (the
/// client sees a short body and a close), one error is logged, and nothing hangs.
/// </summary>
public class TruncationTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 100L * 1024 * 1024;

    private const long TruncatedSize = 1024 * 1024;

    private const int ReadBeforeTruncating = 4 * 1024 * 1024;

    [Fact]
    public async Task TruncatingTheFileMidSendAbortsWithOneError()
    {
        string path = files.Get("truncate/shrinking.bin", FileSize);
        var handled = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/f", async (HttpContext context) =>
        {
            try
            {
                await context.Response.SendFileAsync(path);
                handled.TrySetResult("completed");
            }
            catch (Exception ex)
            {
                handled.TrySetResult(ex.GetType().Name);
                throw;
            }
        }));

        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, RawHttpConnection.ReceiveBuffer(64 * 1024), Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get("/f"));
        long received = await connection.DrainAsync(ReadBeforeTruncating);
        Assert.Equal(ReadBeforeTruncating, received);

        using (var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            file.SetLength(TruncatedSize);
        }
        // The client keeps reading (slowly enough that the server is still sending): the stream must end.
        Assert.True(await connection.WaitForCloseAsync(Waits.Short), "The connection was not closed after the file was truncated.");

        string outcome = await handled.Task.WaitAsync(Waits.Short);
        await Bytes.EventuallyAsync(() => host.Logs.AtLeast(LogLevel.Error).Any(), () =>
            $"the truncation is logged (SendFileAsync: {outcome}); transport log:\n"
            + string.Join("\n", host.Logs.Entries.Where(e => e.Category.StartsWith("SpliceTransport", StringComparison.Ordinal))));
        // A second error, if any, would be logged before the connection is gone on the server's side too.
        await Poll.EventuallyAsync(() => host.Metrics.ActiveConnections == 0, () => "the connection closed on the server", Waits.Short);
        var errors = host.Logs.AtLeast(LogLevel.Error).ToList();
        Assert.True(errors.Count == 1, $"Expected exactly one error, got {errors.Count}:\n" + string.Join("\n", errors));
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
        Assert.Equal(0, await OpenFiles.WaitUntilClosedAsync(path, Waits.Short));
    }
}
