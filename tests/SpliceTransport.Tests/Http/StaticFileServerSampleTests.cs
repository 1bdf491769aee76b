using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Mvc.Testing;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// The sample itself (samples/StaticFileServer, its own Program), on real Kestrel on loopback with
/// SpliceTransport: what a new user gets from it.
/// </summary>
public class StaticFileServerSampleTests
{
    /// <summary>The sample's shipped web root, in the source tree: the file a user would edit.</summary>
    private static readonly string WebRoot = FindSampleWebRoot();

    [Fact]
    public async Task RootServesIndexHtmlZeroCopy()
    {
        string indexHtml = Path.Combine(WebRoot, "index.html");
        await using WebApplicationFactory<Program> factory = new WebApplicationFactory<Program>()
            .WithWebHostBuilder(builder => builder.UseSetting("root", WebRoot).UseSetting("transport", "splice"));
        factory.UseKestrel(port: 0);   // a real server on a free port, not the in-memory TestServer
        factory.StartServer();
        using var metrics = new MetricsRecorder(factory.Services);
        using HttpClient client = factory.CreateClient();

        using HttpResponseMessage response = await client.GetAsync("/").WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        byte[] body = await response.Content.ReadAsByteArrayAsync().WaitAsync(Waits.Response);
        Assert.Equal(TestFiles.Sha256(indexHtml), TestFiles.Sha256(body));
        // Counted by SpliceTransport's own meter: the request came through this transport, and the file
        // left with sendfile rather than through a buffer.
        await Bytes.EventuallyAsync(() => metrics.ZeroCopyResponses >= 1, "the zero-copy response is counted");
        Assert.Equal(1, metrics.AcceptedConnections);
        Assert.Equal(new FileInfo(indexHtml).Length, metrics.ZeroCopyBytes);
    }

    [Fact]
    public async Task AFolderNamedWithoutItsSlashIsRedirectedAndServesItsIndexAndAMissingFileIs404()
    {
        using var root = new TestFiles();
        string index = root.Create("docs/index.html", 1000);
        await using WebApplicationFactory<Program> factory = new WebApplicationFactory<Program>()
            .WithWebHostBuilder(builder => builder.UseSetting("root", root.Root).UseSetting("transport", "splice"));
        factory.UseKestrel(port: 0);
        factory.StartServer();
        // A client of its own: the factory's follows redirects on a real server whatever its options say.
        using var client = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false }) { BaseAddress = factory.ClientOptions.BaseAddress };

        using HttpResponseMessage redirect = await client.GetAsync("/docs?x=1").WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.MovedPermanently, redirect.StatusCode);
        Assert.Equal("/docs/?x=1", redirect.Headers.Location?.OriginalString);

        using HttpResponseMessage folder = await client.GetAsync("/docs/").WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.OK, folder.StatusCode);
        Assert.Equal(TestFiles.Sha256(index), TestFiles.Sha256(await folder.Content.ReadAsByteArrayAsync().WaitAsync(Waits.Response)));

        using HttpResponseMessage missing = await client.GetAsync("/docs/nothing.bin").WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Theory]
    [InlineData("splice")]
    [InlineData("sockets")]
    public async Task CurlUploadIsSavedAndAnswered201WithJson(string transport)
    {
        using var folder = new TestFiles();
        using var sources = new TestFiles();
        // Over 1 MiB, so curl sends Expect: 100-continue and waits for the 100.
        string source = sources.Create("bigfile", 3 * 1024 * 1024 + 5);
        await using WebApplicationFactory<Program> factory = StartWithUploads(transport, folder.Root);

        Curl.Result result = await Curl.RunAsync("-T", source, "--write-out", "\n%{http_code}", $"{BaseUrl(factory)}/upload/bigfile");

        Assert.True(result.ExitCode == 0, $"curl exited with {result.ExitCode}: {result.Stderr}");
        (string json, string status) = SplitStatus(result.Stdout);
        Assert.Equal("201", status);
        using JsonDocument answer = JsonDocument.Parse(json);
        Assert.Equal("bigfile", answer.RootElement.GetProperty("name").GetString());
        Assert.Equal(new FileInfo(source).Length, answer.RootElement.GetProperty("length").GetInt64());
        // On splice the rest is spliced into the file, after what the input held when the app asked (up to about
        // twice the transport's 1 MiB read buffer, as fast as curl sends).
        bool splice = transport == "splice";
        Assert.Equal(splice, answer.RootElement.GetProperty("zeroCopy").GetBoolean());
        Assert.Equal(splice ? null : "other_transport", answer.RootElement.GetProperty("fallbackReason").GetString());
        Assert.InRange(answer.RootElement.GetProperty("splicedBytes").GetInt64(), splice ? 1 : 0, splice ? new FileInfo(source).Length : 0);
        Assert.Equal(TestFiles.Sha256(source), TestFiles.Sha256(Path.Combine(folder.Root, "bigfile")));
        Assert.Equal(["bigfile"], Directory.GetFileSystemEntries(folder.Root).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("splice")]
    [InlineData("sockets")]
    public async Task ChunkedCurlUploadIsSavedThroughTheFallback(string transport)
    {
        using var folder = new TestFiles();
        using var sources = new TestFiles();
        string source = sources.Create("chunky", 700_001);
        await using WebApplicationFactory<Program> factory = StartWithUploads(transport, folder.Root);

        Curl.Result result = await Curl.RunAsync("-T", source, "-H", "Transfer-Encoding: chunked", "--write-out", "\n%{http_code}", $"{BaseUrl(factory)}/upload/chunky");

        Assert.True(result.ExitCode == 0, $"curl exited with {result.ExitCode}: {result.Stderr}");
        (string json, string status) = SplitStatus(result.Stdout);
        Assert.Equal("201", status);
        using JsonDocument answer = JsonDocument.Parse(json);
        Assert.Equal(700_001, answer.RootElement.GetProperty("length").GetInt64());
        Assert.False(answer.RootElement.GetProperty("zeroCopy").GetBoolean());
        Assert.Equal(TestFiles.Sha256(source), TestFiles.Sha256(Path.Combine(folder.Root, "chunky")));
    }

    [Theory]
    [InlineData(".hidden", "starts with a dot")]
    [InlineData("..hidden", "starts with a dot")]
    [InlineData("a%2Fb", "contains '%'")]
    [InlineData("a%20b", "contains ' '")]
    [InlineData("caf%C3%A9", "contains '\u00e9'")]
    [InlineData("semi%3Bcolon", "contains ';'")]
    public async Task BadUploadNamesAre400WithAMessage(string name, string message)
    {
        using var folder = new TestFiles();
        await using WebApplicationFactory<Program> factory = StartWithUploads("splice", folder.Root);
        using HttpClient client = factory.CreateClient();

        using HttpResponseMessage response = await client.PutAsync($"/upload/{name}", new StringContent("body")).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains(message, await response.Content.ReadAsStringAsync());
        Assert.Empty(Directory.GetFileSystemEntries(folder.Root));
    }

    [Theory]
    [InlineData("splice")]
    [InlineData("sockets")]
    public async Task UploadOverMaxUploadBytesIs413WithNothingSaved(string transport)
    {
        using var folder = new TestFiles();
        using var sources = new TestFiles();
        string source = sources.Create("toobig", 5000);
        await using WebApplicationFactory<Program> factory = StartWithUploads(transport, folder.Root, ("max-upload-bytes", "4999"));

        Curl.Result result = await Curl.RunAsync("-T", source, "--write-out", "\n%{http_code}", $"{BaseUrl(factory)}/upload/toobig");

        Assert.Equal("413", SplitStatus(result.Stdout).Status);
        Assert.Empty(Directory.GetFileSystemEntries(folder.Root));
    }

    /// <summary>The sample with --uploads, on a real Kestrel (not the in-memory TestServer) on a free port.</summary>
    private static WebApplicationFactory<Program> StartWithUploads(string transport, string uploads, params (string Key, string Value)[] settings)
    {
        WebApplicationFactory<Program> factory = new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            builder.UseSetting("root", WebRoot).UseSetting("transport", transport).UseSetting("uploads", uploads);
            foreach ((string key, string value) in settings)
            {
                builder.UseSetting(key, value);
            }
        });
        factory.UseKestrel(port: 0);
        factory.StartServer();
        return factory;
    }

    private static string BaseUrl(WebApplicationFactory<Program> factory) => factory.ClientOptions.BaseAddress.ToString().TrimEnd('/');

    /// <summary>curl's output with --write-out "\n%{http_code}": the body, then the status on the last line.</summary>
    private static (string Body, string Status) SplitStatus(string stdout)
    {
        int newline = stdout.LastIndexOf('\n');
        return (stdout[..Math.Max(newline, 0)], stdout[(newline + 1)..].Trim());
    }

    private static string FindSampleWebRoot()
    {
        const string relative = "samples/StaticFileServer/wwwroot";
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, relative);
            if (File.Exists(Path.Combine(candidate, "index.html")))
            {
                return candidate;
            }
        }
        throw new DirectoryNotFoundException($"No {relative}/index.html above {AppContext.BaseDirectory}.");
    }
}
