using System.Net;
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
