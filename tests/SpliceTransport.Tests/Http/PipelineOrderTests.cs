using System.Globalization;
using System.Text;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Pipelined requests on one keep-alive connection: every file response leaves between its own headers and
/// the next response's headers, with exactly its own bytes, whatever mix of file and normal responses.
/// </summary>
public class PipelineOrderTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 2 * 1024 * 1024 + 99;

    private string File => files.Get("pipeline/file.bin", FileSize);

    private Task<SpliceTestHost> StartAsync() => SpliceTestHost.StartAsync(app =>
    {
        _ = File;
        app.MapGet("/plaintext", () => "Hello, World!");
        app.MapGet("/range", (HttpContext context, long from, long count) =>
            context.Response.SendFileAsync(File, from, count, context.RequestAborted));
    });

    /// <summary>Twenty different ranges: tiny, page-sized, crossing pages, large, the very end.</summary>
    private static List<(long From, long Count)> Ranges()
    {
        var random = new Random(20);
        var ranges = new List<(long, long)> { (0, 1), (FileSize - 1, 1), (0, FileSize), (4095, 2), (4096, 4096) };
        while (ranges.Count < 20)
        {
            long from = random.NextInt64(FileSize);
            long count = 1 + random.NextInt64(Math.Min(FileSize - from, 300_000));
            ranges.Add((from, count));
        }
        return ranges;
    }

    private static string RangeRequest((long From, long Count) range) =>
        RawHttpConnection.Get(string.Create(CultureInfo.InvariantCulture, $"/range?from={range.From}&count={range.Count}"));

    [Fact]
    public async Task TwentyPipelinedRangesArriveInOrderWithTheirOwnBytes()
    {
        await using var host = await StartAsync();
        List<(long From, long Count)> ranges = Ranges();
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        // One write: all twenty requests are in the server's input before the first response leaves.
        await connection.SendAsync(string.Concat(ranges.Select(RangeRequest)));

        long total = 0;
        foreach ((long from, long count) in ranges)
        {
            RawHttpResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            Assert.Equal(count, response.Body.Length);
            Assert.True(TestFiles.Sha256(File, from, count) == TestFiles.Sha256(response.Body), $"Range {from}+{count} has the wrong bytes.");
            total += count;
        }
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == ranges.Count, "every response is counted");
        await host.Metrics.AssertEventuallyAsync(total, m => m.ZeroCopyBytes);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task PipelinedFileAndPlaintextResponsesInterleaveCorrectly()
    {
        await using var host = await StartAsync();
        List<(long From, long Count)> ranges = Ranges();
        var requests = new StringBuilder();
        foreach ((long, long) range in ranges)
        {
            requests.Append(RawHttpConnection.Get("/plaintext"));
            requests.Append(RangeRequest(range));
        }
        requests.Append(RawHttpConnection.Get("/plaintext"));
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        await connection.SendAsync(requests.ToString());

        foreach ((long from, long count) in ranges)
        {
            RawHttpResponse text = await connection.ReadResponseAsync();
            Assert.Equal("Hello, World!", Encoding.ASCII.GetString(text.Body));
            RawHttpResponse file = await connection.ReadResponseAsync();
            Assert.True(TestFiles.Sha256(File, from, count) == TestFiles.Sha256(file.Body), $"Range {from}+{count} has the wrong bytes.");
        }
        Assert.Equal("Hello, World!", Encoding.ASCII.GetString((await connection.ReadResponseAsync()).Body));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == ranges.Count, "every response is counted");
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }
}
