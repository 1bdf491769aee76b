using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.FileProviders;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Every public way of sending a file reaches the zero-copy path: the metrics count one zero-copy response
/// of exactly the file's size and no fallback, and the client receives the file's exact bytes.
/// </summary>
public class EntryPointTests(FileFixture files) : IClassFixture<FileFixture>
{
    /// <summary>Big enough for several sendfile calls, odd so that no block size hides an off-by-one.</summary>
    private const long FileSize = 3 * 1024 * 1024 + 17;

    private string File => files.Get("entry/file.bin", FileSize);

    private async Task<SpliceTestHost> StartAsync(Action<WebApplication> configure, Action<WebApplicationBuilder>? builder = null)
    {
        _ = File;
        return await SpliceTestHost.StartAsync(configure, configureBuilder: builder);
    }

    private async Task AssertZeroCopyGetAsync(SpliceTestHost host, string url, long expectedResponses = 1)
    {
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync(url, HttpCompletionOption.ResponseHeadersRead).WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(FileSize, response.Content.Headers.ContentLength);
        await using Stream body = await response.Content.ReadAsStreamAsync();
        Assert.Equal(TestFiles.Sha256(File), await TestFiles.Sha256Async(body).WaitAsync(Waits.Response));
        await AssertMetricsAsync(host, expectedResponses);
    }

    private static async Task AssertMetricsAsync(SpliceTestHost host, long expectedResponses)
    {
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses >= expectedResponses, "the zero-copy response is counted");
        await host.Metrics.AssertEventuallyAsync(expectedResponses, m => m.ZeroCopyResponses);
        await host.Metrics.AssertEventuallyAsync(expectedResponses * FileSize, m => m.ZeroCopyBytes);
        Assert.Equal(0, host.Metrics.AllFallbacks);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    private StaticFileOptions StaticFileOptions() => new()
    {
        FileProvider = new PhysicalFileProvider(files.Root),
        ServeUnknownFileTypes = true,
    };

    [Fact]
    public async Task UseStaticFilesWithHttpClient()
    {
        await using var host = await StartAsync(app => app.UseStaticFiles(StaticFileOptions()));
        await AssertZeroCopyGetAsync(host, "/entry/file.bin");
    }

    [Fact]
    public async Task UseStaticFilesWithCurl()
    {
        await using var host = await StartAsync(app => app.UseStaticFiles(StaticFileOptions()));
        string output = Path.Combine(files.Root, "curl-" + Guid.NewGuid().ToString("N"));
        int status = await Curl.DownloadAsync(new Uri(host.BaseAddress, "/entry/file.bin").ToString(), output);
        Assert.Equal(200, status);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(output));
        await AssertMetricsAsync(host, 1);
    }

    [Fact]
    public async Task MapStaticAssetsWithAnExplicitManifest()
    {
        // MapStaticAssets normally reads the manifest the SDK writes at build time
        // ({ApplicationName}.staticwebassets.endpoints.json); it also takes an explicit path, so the test writes
        // a manifest for its own file and serves it from a web root pointing at the test folder.
        string manifest = Path.Combine(files.Root, "test.staticwebassets.endpoints.json");
        var info = new FileInfo(File);
        var document = new
        {
            Version = 1,
            ManifestType = "Build",
            Endpoints = new[]
            {
                new
                {
                    Route = "entry/file.bin",
                    AssetFile = "entry/file.bin",
                    Selectors = Array.Empty<object>(),
                    EndpointProperties = Array.Empty<object>(),
                    ResponseHeaders = new[]
                    {
                        new { Name = "Content-Length", Value = FileSize.ToString(System.Globalization.CultureInfo.InvariantCulture) },
                        new { Name = "Content-Type", Value = "application/octet-stream" },
                        new { Name = "ETag", Value = "\"" + TestFiles.Sha256(File)[..16] + "\"" },
                        new { Name = "Last-Modified", Value = info.LastWriteTimeUtc.ToString("R", System.Globalization.CultureInfo.InvariantCulture) },
                    },
                },
            },
        };
        await System.IO.File.WriteAllTextAsync(manifest, JsonSerializer.Serialize(document));

        await using var host = await StartAsync(
            app => app.MapStaticAssets(manifest),
            builder =>
            {
                builder.Environment.WebRootPath = files.Root;
                builder.Environment.WebRootFileProvider = new PhysicalFileProvider(files.Root);
            });
        await AssertZeroCopyGetAsync(host, "/entry/file.bin");
    }

    [Fact]
    public async Task ResultsFileWithAPhysicalPath()
    {
        await using var host = await StartAsync(app => app.MapGet("/f", () => Results.File(File, "application/octet-stream")));
        await AssertZeroCopyGetAsync(host, "/f");
    }

    [Fact]
    public async Task TypedResultsPhysicalFile()
    {
        await using var host = await StartAsync(app => app.MapGet("/f", PhysicalFileHttpResult () => TypedResults.PhysicalFile(File, "application/octet-stream")));
        await AssertZeroCopyGetAsync(host, "/f");
    }

    [Fact]
    public async Task ResultsFileWithAVirtualPathOnTheWebRoot()
    {
        await using var host = await StartAsync(
            app => app.MapGet("/f", () => Results.File("entry/file.bin", "application/octet-stream")),
            builder =>
            {
                builder.Environment.WebRootPath = files.Root;
                builder.Environment.WebRootFileProvider = new PhysicalFileProvider(files.Root);
            });
        await AssertZeroCopyGetAsync(host, "/f");
    }

    [Fact]
    public async Task ResponseSendFileAsyncWithAPath()
    {
        await using var host = await StartAsync(app => app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(File)));
        await AssertZeroCopyGetAsync(host, "/f");
    }

    [Fact]
    public async Task ResponseSendFileAsyncWithAnIFileInfo()
    {
        var provider = new PhysicalFileProvider(files.Root);
        await using var host = await StartAsync(app => app.MapGet("/f", (HttpContext context) =>
            context.Response.SendFileAsync(provider.GetFileInfo("entry/file.bin"))));
        await AssertZeroCopyGetAsync(host, "/f");
    }

    [Fact]
    public async Task TheFeatureDirectly()
    {
        await using var host = await StartAsync(app => app.MapGet("/f", (HttpContext context) =>
            context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpResponseBodyFeature>()!.SendFileAsync(File, 0, null, context.RequestAborted)));
        await AssertZeroCopyGetAsync(host, "/f");
    }
}
