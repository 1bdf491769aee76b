using System.Buffers;
using System.Text;
using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Kestrel's own byte count stays right through zero-copy responses: no Content-Length mismatch is logged, and
/// the connection stays usable for whatever comes next, through HttpClient and curl alike.
/// </summary>
public class ZeroCopyByteCountTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 777_777;

    private string File => files.Get("keepalive/file.bin", FileSize);

    private Task<SpliceTestHost> StartAsync() => SpliceTestHost.StartAsync(app =>
    {
        _ = File;
        app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true });
        app.MapGet("/plaintext", () => "Hello, World!");
        app.MapPost("/echo", async (HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            await context.Response.WriteAsync(await reader.ReadToEndAsync());
        });
        app.MapGet("/twice", async (HttpContext context) =>
        {
            // Two files in one response: the second is queued behind the first.
            context.Response.ContentLength = 2 * FileSize;
            await context.Response.SendFileAsync(File);
            await context.Response.SendFileAsync(File);
        });
        app.MapGet("/unflushed", async (HttpContext context) =>
        {
            // Bytes written through the PipeWriter and not flushed: the response has not even started.
            context.Response.ContentLength = 4 + FileSize + 4;
            context.Response.BodyWriter.Write("head"u8);
            await context.Response.SendFileAsync(File);
            // Not Write without a flush here: after a SendFileAsync, Kestrel (on either transport) does not flush
            // bytes that were only advanced, and the response would never end.
            await context.Response.BodyWriter.WriteAsync("tail"u8.ToArray());
        });
        app.MapGet("/sandwich", async (HttpContext context) =>
        {
            // Normal bytes before and after the file, in one Content-Length response.
            context.Response.ContentLength = 4 + FileSize + 4;
            await context.Response.WriteAsync("head");
            await context.Response.SendFileAsync(File);
            await context.Response.WriteAsync("tail");
        });
    });

    [Fact]
    public async Task EveryKindOfRequestFollowsAZeroCopyResponseOnOneConnection()
    {
        await using var host = await StartAsync();
        using HttpClient client = host.CreateClient();
        string sha = TestFiles.Sha256(File);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(sha, TestFiles.Sha256(await client.GetByteArrayAsync("/keepalive/file.bin").WaitAsync(Waits.Response)));
            Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext").WaitAsync(Waits.Response));
            using HttpResponseMessage echo = await client.PostAsync("/echo", new StringContent("ping " + i)).WaitAsync(Waits.Response);
            Assert.Equal("ping " + i, await echo.Content.ReadAsStringAsync());
        }
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 3, "three zero-copy responses");
        await host.Metrics.AssertEventuallyAsync(3 * FileSize, m => m.ZeroCopyBytes);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task TwoFilesInOneResponse()
    {
        await using var host = await StartAsync();
        using HttpClient client = host.CreateClient();
        byte[] body = await client.GetByteArrayAsync("/twice").WaitAsync(Waits.Response);
        byte[] file = System.IO.File.ReadAllBytes(File);
        Assert.Equal(TestFiles.Sha256([.. file, .. file]), TestFiles.Sha256(body));
        Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext").WaitAsync(Waits.Response));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 2, "two zero-copy sends");
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    /// <summary>
    /// Bytes written before and after the file keep their place: written and flushed (/sandwich), or only advanced
    /// through the PipeWriter before the file, so the response has not even started (/unflushed).
    /// </summary>
    [Theory]
    [InlineData("/sandwich")]
    [InlineData("/unflushed")]
    public async Task BytesBeforeAndAfterTheFileKeepTheirPlace(string path)
    {
        await using var host = await StartAsync();
        using HttpClient client = host.CreateClient();
        byte[] body = await client.GetByteArrayAsync(path).WaitAsync(Waits.Response);
        Assert.Equal(TestFiles.Sha256([.. "head"u8, .. System.IO.File.ReadAllBytes(File), .. "tail"u8]), TestFiles.Sha256(body));
        Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext").WaitAsync(Waits.Response));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy send");
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task CurlReusesTheConnectionAcrossFileResponses()
    {
        await using var host = await StartAsync();
        string url = new Uri(host.BaseAddress, "/keepalive/file.bin").ToString();
        string first = Path.Combine(files.Root, "curl-a-" + Guid.NewGuid().ToString("N"));
        string second = Path.Combine(files.Root, "curl-b-" + Guid.NewGuid().ToString("N"));
        // Two URLs in one curl run share a connection when the first response keeps it alive.
        Curl.Result result = await Curl.RunAsync("--output", first, url, "--output", second, url, "--write-out", "%{num_connects} ");
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(first));
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(second));
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 2, "two zero-copy responses");
        host.Logs.AssertNoContentLengthMismatch();
    }
}
