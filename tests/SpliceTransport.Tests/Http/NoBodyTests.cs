using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Responses without a body (HEAD, 204, 304) send no file byte and touch no file: SendFileAsync of a path that
/// does not even exist completes without an error. Each is checked on the raw socket, where a stray body byte
/// would corrupt the next response on the same connection.
/// </summary>
public class NoBodyTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 200_000;

    private string File => files.Get("nobody/file.bin", FileSize);

    private string Missing => Path.Combine(files.Root, "does-not-exist.bin");

    /// <summary>Sends <paramref name="first"/>, then GET /next on the same connection, and returns both responses.</summary>
    private static async Task<(RawHttpResponse First, RawHttpResponse Next)> TwoRequestsAsync(SpliceTestHost host, string first, bool head)
    {
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        await connection.SendAsync(first);
        RawHttpResponse response = await connection.ReadResponseAsync(head);
        await connection.SendAsync(RawHttpConnection.Get("/next"));
        RawHttpResponse next = await connection.ReadResponseAsync();
        Assert.Equal(200, next.StatusCode);
        Assert.Equal("next", System.Text.Encoding.ASCII.GetString(next.Body));
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        return (response, next);
    }

    private Task<SpliceTestHost> StartAsync(Action<WebApplication> configure) => SpliceTestHost.StartAsync(app =>
    {
        _ = File;
        configure(app);
        app.MapGet("/next", () => "next");
    });

    [Fact]
    public async Task HeadOnAStaticFileSendsHeadersOnly()
    {
        await using var host = await StartAsync(app =>
            app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true }));
        var (head, _) = await TwoRequestsAsync(host, RawHttpConnection.Get("/nobody/file.bin", method: "HEAD"), head: true);
        Assert.Equal(200, head.StatusCode);
        Assert.Equal("200000", head.Header("Content-Length"));
        Assert.Equal(0, host.Metrics.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task HeadThroughResultsFileSendsNoBody()
    {
        await using var host = await StartAsync(app => app.MapMethods("/f", ["GET", "HEAD"], () => Results.File(File, "application/octet-stream")));
        var (head, _) = await TwoRequestsAsync(host, RawHttpConnection.Get("/f", method: "HEAD"), head: true);
        Assert.Equal(200, head.StatusCode);
        Assert.Equal("200000", head.Header("Content-Length"));
        Assert.Equal(0, host.Metrics.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task HeadThroughSendFileAsyncTouchesNoFile()
    {
        string? error = null;
        await using var host = await StartAsync(app => app.MapMethods("/f", ["HEAD"], async (HttpContext context) =>
        {
            try
            {
                await context.Response.SendFileAsync(Missing);
            }
            catch (Exception ex)
            {
                error = ex.GetType().Name;
            }
        }));
        var (head, _) = await TwoRequestsAsync(host, RawHttpConnection.Get("/f", method: "HEAD"), head: true);
        Assert.Equal(200, head.StatusCode);
        Assert.Null(error);
        Assert.Equal(0, host.Metrics.ZeroCopyResponses + host.Metrics.AllFallbacks);
        host.Logs.AssertNoErrors();
    }

    [Theory]
    [InlineData(204)]
    [InlineData(304)]
    public async Task NoContentAndNotModifiedTouchNoFile(int status)
    {
        string? error = null;
        await using var host = await StartAsync(app => app.MapGet("/f", async (HttpContext context) =>
        {
            context.Response.StatusCode = status;
            try
            {
                await context.Response.SendFileAsync(Missing);
            }
            catch (Exception ex)
            {
                error = ex.GetType().Name;
            }
        }));
        var (response, _) = await TwoRequestsAsync(host, RawHttpConnection.Get("/f"), head: false);
        Assert.Equal(status, response.StatusCode);
        Assert.Null(error);
        Assert.Null(response.Header("Transfer-Encoding"));
        Assert.Equal(0, host.Metrics.ZeroCopyResponses + host.Metrics.AllFallbacks);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task IfNoneMatchGivesNotModifiedWithNoBody()
    {
        await using var host = await StartAsync(app =>
            app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(files.Root), ServeUnknownFileTypes = true }));
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get("/nobody/file.bin"));
        RawHttpResponse full = await connection.ReadResponseAsync();
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(full.Body));
        string etag = full.Header("ETag")!;

        await connection.SendAsync(RawHttpConnection.Get("/nobody/file.bin", $"If-None-Match: {etag}\r\n"));
        RawHttpResponse notModified = await connection.ReadResponseAsync();
        await connection.SendAsync(RawHttpConnection.Get("/next"));
        Assert.Equal("next", System.Text.Encoding.ASCII.GetString((await connection.ReadResponseAsync()).Body));
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        Assert.Equal(304, notModified.StatusCode);
        Assert.Empty(notModified.Body);
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "the first response is counted");
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task AnEmptyFileSendsAnEmptyBodyAndNoSendfile()
    {
        string empty = files.Get("nobody/empty.bin", 0);
        await using var host = await StartAsync(app => app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(empty)));
        var (response, _) = await TwoRequestsAsync(host, RawHttpConnection.Get("/f"), head: false);
        Assert.Equal(200, response.StatusCode);
        Assert.Equal("0", response.Header("Content-Length"));
        Assert.Empty(response.Body);
        Assert.Equal(0, host.Metrics.ZeroCopyBytes);
        Assert.Equal(0, host.Metrics.AllFallbacks);
        Assert.Equal(0, OpenFiles.Count(empty));
        host.Logs.AssertNoErrors();
    }
}
