using System.Net;
using System.Security.Cryptography;
using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>A sparse 5 GiB file with random bytes around 2^31, 2^32 and 4.5 GiB (the rest reads as zeros).</summary>
public sealed class SparseFileFixture : IDisposable
{
    public const long Size = 5L << 30;

    /// <summary>Where random data was written, and how much: the interesting offsets of the file.</summary>
    public static readonly (long Offset, int Count)[] Islands =
    [
        ((1L << 31) - 4096, 8192),
        ((1L << 32) - 4096, 8192),
        (4608L * 1024 * 1024 - 4096, 1024 * 1024 + 8192),
        (Size - 4096, 4096),
    ];

    public SparseFileFixture()
    {
        Path = System.IO.Path.Combine(Files.Root, "sparse-5g.bin");
        using var file = new FileStream(Path, FileMode.Create, FileAccess.Write);
        file.SetLength(Size);
        foreach ((long offset, int count) in Islands)
        {
            byte[] data = RandomNumberGenerator.GetBytes(count);
            file.Position = offset;
            file.Write(data);
        }
    }

    public TestFiles Files { get; } = new();

    public string Path { get; }

    public void Dispose() => Files.Dispose();
}

/// <summary>
/// Files above 4 GiB and offsets above 2^31 and 2^32: nothing on the way truncates an offset or a count
/// to 32 bits. Every body is compared with the file's own bytes read locally.
/// </summary>
public class LargeFileTests(SparseFileFixture sparse) : IClassFixture<SparseFileFixture>
{
    public static TheoryData<long, long> Ranges => new()
    {
        { 4608L * 1024 * 1024, 1024 * 1024 },          // 4.5 GiB, 1 MiB
        { (1L << 31) - 100, 200 },                     // across 2^31
        { (1L << 32) - 1000, 3000 },                   // across 2^32
        { SparseFileFixture.Size - 4096, 4096 },       // the last page
    };

    [Theory]
    [MemberData(nameof(Ranges))]
    public async Task StaticFilesRangeAboveFourGiBIsExact(long from, long count)
    {
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(sparse.Files.Root), ServeUnknownFileTypes = true }));
        using HttpClient client = host.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/sparse-5g.bin");
        request.Headers.TryAddWithoutValidation("Range", $"bytes={from}-{from + count - 1}");

        using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
        Assert.Equal(SparseFileFixture.Size, response.Content.Headers.ContentRange!.Length);
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal(TestFiles.Sha256(Bytes.Read(sparse.Path, from, (int)count)), TestFiles.Sha256(body));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(count, m => m.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
    }

    [Theory]
    [MemberData(nameof(Ranges))]
    public async Task SendFileAsyncOffsetAboveFourGiBIsExact(long from, long count)
    {
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(sparse.Path, from, count, context.RequestAborted)));
        using HttpClient client = host.CreateClient();
        byte[] body = await client.GetByteArrayAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(TestFiles.Sha256(Bytes.Read(sparse.Path, from, (int)count)), TestFiles.Sha256(body));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(count, m => m.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task TheTailOfAFiveGiBFileWithoutACount()
    {
        // No count: the length (here 4 KiB) is computed from a 64-bit size minus a 64-bit offset.
        long from = SparseFileFixture.Size - 4096;
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(sparse.Path, from, null, context.RequestAborted)));
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(4096, response.Content.Headers.ContentLength);
        Assert.Equal(TestFiles.Sha256(Bytes.Read(sparse.Path, from, 4096)), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
    }
}
