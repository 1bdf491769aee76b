using System.Net;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Sizes around every boundary that could hide an off-by-one (empty, one byte, the 512-byte sniff length,
/// a 4 KiB page, 64 KiB, 1 MiB scratch blocks) and one large file: every byte arrives, and every byte went
/// zero-copy.
/// </summary>
public class FileSizeTests(FileFixture files) : IClassFixture<FileFixture>
{
    public static TheoryData<long> Sizes => new()
    {
        0, 1, 511, 512, 513, 4095, 4096, 65535, 65537, 1024 * 1024 + 7, 100L * 1024 * 1024,
    };

    [Theory]
    [MemberData(nameof(Sizes))]
    public async Task EveryByteArrivesAndGoesZeroCopy(long size)
    {
        string path = files.Get($"size-{size}.bin", size);
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.MapGet("/f", () => Results.File(path, "application/octet-stream")));
        using HttpClient client = host.CreateClient();

        using HttpResponseMessage response = await client.GetAsync("/f", HttpCompletionOption.ResponseHeadersRead).WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(size, response.Content.Headers.ContentLength);
        await using Stream body = await response.Content.ReadAsStreamAsync();
        Assert.Equal(TestFiles.Sha256(path), await TestFiles.Sha256Async(body).WaitAsync(Waits.Response));

        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(size, m => m.ZeroCopyBytes);
        Assert.Equal(0, host.Metrics.AllFallbacks);

        // Keep-alive survives the response: the same connection serves the next request.
        using HttpResponseMessage again = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await again.Content.ReadAsByteArrayAsync()));
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }
}
