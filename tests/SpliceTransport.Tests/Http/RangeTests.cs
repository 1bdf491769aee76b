using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Offsets and counts are honoured byte for byte: StaticFiles' 206 responses (explicit, open-ended and suffix
/// ranges, If-Range with a matching and a stale ETag), and SendFileAsync's own offset/count.
/// </summary>
public class RangeTests(FileFixture files) : IClassFixture<FileFixture>
{
    /// <summary>A few MiB, odd-sized, so ranges cross sendfile chunks and pages.</summary>
    private const long FileSize = 5 * 1024 * 1024 + 333;

    private string File => files.Get("range/file.bin", FileSize);

    private Task<SpliceTestHost> StartStaticFilesAsync() => SpliceTestHost.StartAsync(app =>
    {
        _ = File;
        app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true });
    });

    public static TheoryData<string, long, long> Ranges => new()
    {
        // Range header value, expected first byte, expected length.
        { "bytes=0-0", 0, 1 },
        { "bytes=0-511", 0, 512 },
        { "bytes=1-4096", 1, 4096 },
        { "bytes=4095-4096", 4095, 2 },
        { "bytes=1000000-3999999", 1000000, 3000000 },
        { "bytes=5000000-", 5000000, FileSize - 5000000 },
        { $"bytes={FileSize - 1}-", FileSize - 1, 1 },
        { "bytes=-1", FileSize - 1, 1 },
        { "bytes=-70000", FileSize - 70000, 70000 },
        { $"bytes=5000-{FileSize + 1000}", 5000, FileSize - 5000 },
    };

    [Theory]
    [MemberData(nameof(Ranges))]
    public async Task StaticFilesRangeIsExact(string range, long from, long length)
    {
        await using var host = await StartStaticFilesAsync();
        using HttpClient client = host.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/range/file.bin");
        request.Headers.TryAddWithoutValidation("Range", range);

        using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(new ContentRangeHeaderValue(from, from + length - 1, FileSize), response.Content.Headers.ContentRange);
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal(length, body.Length);
        Assert.Equal(TestFiles.Sha256(File, from, length), TestFiles.Sha256(body));

        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(length, m => m.ZeroCopyBytes);
        Assert.Equal(0, host.Metrics.AllFallbacks);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task IfRangeWithTheCurrentETagGivesTheRange()
    {
        await using var host = await StartStaticFilesAsync();
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage full = await client.GetAsync("/range/file.bin").WaitAsync(Waits.Response);
        EntityTagHeaderValue etag = full.Headers.ETag!;
        Assert.NotNull(etag);

        using var request = new HttpRequestMessage(HttpMethod.Get, "/range/file.bin");
        request.Headers.TryAddWithoutValidation("Range", "bytes=100-199");
        request.Headers.IfRange = new RangeConditionHeaderValue(etag);
        using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
        Assert.Equal(TestFiles.Sha256(File, 100, 100), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 2, "two zero-copy responses");
        await host.Metrics.AssertEventuallyAsync(FileSize + 100, m => m.ZeroCopyBytes);
    }

    [Fact]
    public async Task IfRangeWithAStaleETagGivesTheWholeFile()
    {
        await using var host = await StartStaticFilesAsync();
        using HttpClient client = host.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/range/file.bin");
        request.Headers.TryAddWithoutValidation("Range", "bytes=100-199");
        request.Headers.IfRange = new RangeConditionHeaderValue(new EntityTagHeaderValue("\"stale\""));
        using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
    }

    [Fact]
    public async Task UnsatisfiableRangeSendsNoFile()
    {
        await using var host = await StartStaticFilesAsync();
        using HttpClient client = host.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/range/file.bin");
        request.Headers.TryAddWithoutValidation("Range", $"bytes={FileSize}-");
        using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, response.StatusCode);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
    }

    public static TheoryData<long, long?> OffsetsAndCounts => new()
    {
        { 0, null }, { 0, 0 }, { 1, null }, { 4096, 4096 }, { 12345, 1 }, { FileSize, null }, { FileSize, 0 },
        { FileSize - 1, 1 }, { 3 * 1024 * 1024 - 1, 2 * 1024 * 1024 + 5 },
    };

    [Theory]
    [MemberData(nameof(OffsetsAndCounts))]
    public async Task SendFileAsyncOffsetAndCountAreExact(long offset, long? count)
    {
        _ = File;
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(File, offset, count, context.RequestAborted)));
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        long expected = count ?? FileSize - offset;
        Assert.Equal(expected, response.Content.Headers.ContentLength);
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal(TestFiles.Sha256(File, offset, expected), TestFiles.Sha256(body));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(expected, m => m.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }
}
