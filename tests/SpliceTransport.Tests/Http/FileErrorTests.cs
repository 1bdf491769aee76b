using System.Text;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Bad input to SendFileAsync fails exactly as on Kestrel's own path (compared with a host on Kestrel's socket
/// transport): the same exception type and parameter name, thrown before any header was sent, so the app can
/// still answer with an error status.
/// </summary>
public class FileErrorTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 10_000;

    private string File => files.Get("errors/file.bin", FileSize);

    /// <summary>
    /// The handler reports what SendFileAsync did: "ok", or the exception's type and ParamName, and whether the
    /// response had started when it was thrown.
    /// </summary>
    private static async Task<string> OutcomeAsync(bool useSplice, string path, long offset, long? count, long? contentLength = null, bool canceled = false)
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/f", async (HttpContext context) =>
        {
            string outcome;
            context.Response.ContentLength = contentLength;
            try
            {
                await context.Response.SendFileAsync(path, offset, count, canceled ? new CancellationToken(true) : context.RequestAborted);
                return;
            }
            catch (Exception ex)
            {
                outcome = ex.GetType().FullName + (ex is ArgumentException { ParamName: { } name } ? $"({name})" : "")
                    + (context.Response.HasStarted ? " after the headers" : " before the headers");
            }
            context.Response.StatusCode = 500;
            context.Response.ContentLength = null;
            await context.Response.WriteAsync(outcome);
        }), useSplice: useSplice);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get("/f"));
        RawHttpResponse response = await connection.ReadResponseAsync();
        if (response.StatusCode == 200)
        {
            return "ok " + TestFiles.Sha256(response.Body);
        }
        Assert.Equal(500, response.StatusCode);
        if (useSplice)
        {
            Assert.Equal(0, host.Metrics.ZeroCopyResponses);
            host.Logs.AssertNoErrors();
        }
        return Encoding.UTF8.GetString(response.Body);
    }

    private async Task AssertSameAsKestrelAsync(string path, long offset, long? count, string expectedType)
    {
        string splice = await OutcomeAsync(useSplice: true, path, offset, count);
        string sockets = await OutcomeAsync(useSplice: false, path, offset, count);
        Assert.Equal(sockets, splice);
        Assert.Equal(expectedType + " before the headers", splice);
    }

    [Fact]
    public Task AMissingFile() =>
        AssertSameAsKestrelAsync(Path.Combine(files.Root, "missing.bin"), 0, null, typeof(FileNotFoundException).FullName!);

    [Fact]
    public Task AFileInAMissingDirectory() =>
        AssertSameAsKestrelAsync(Path.Combine(files.Root, "no-such-dir", "missing.bin"), 0, null, typeof(FileNotFoundException).FullName!);

    [Fact]
    public Task ADirectory() =>
        AssertSameAsKestrelAsync(Path.GetDirectoryName(File)!, 0, null, typeof(FileNotFoundException).FullName!);

    public static TheoryData<long, long?, string> BadRanges => new()
    {
        { -1, null, "offset" },
        { FileSize + 1, null, "offset" },
        { long.MaxValue, 1, "offset" },
        { 0, -1, "count" },
        { 0, FileSize + 1, "count" },
        { FileSize, 1, "count" },
        { 1, FileSize, "count" },
        { 10, long.MaxValue, "count" },
    };

    [Theory]
    [MemberData(nameof(BadRanges))]
    public Task AnOffsetOrCountOutsideTheFile(long offset, long? count, string parameter) =>
        AssertSameAsKestrelAsync(File, offset, count, typeof(ArgumentOutOfRangeException).FullName + $"({parameter})");

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task AnUnreadableFile()
    {
        string path = files.Get("errors/unreadable.bin", FileSize);
        System.IO.File.SetUnixFileMode(path, UnixFileMode.None);
        string splice = await OutcomeAsync(useSplice: true, path, 0, null);
        string sockets = await OutcomeAsync(useSplice: false, path, 0, null);
        Assert.Equal(sockets, splice);
        if (Environment.UserName == "root")
        {
            // chmod 000 does not stop root (CAP_DAC_OVERRIDE): both paths read the file. What can be checked
            // is that they agree, byte for byte.
            Assert.Equal("ok " + TestFiles.Sha256(path), splice);
        }
        else
        {
            Assert.Equal(typeof(UnauthorizedAccessException).FullName + " before the headers", splice);
        }
    }

    [Fact]
    public async Task AContentLengthSmallerThanTheFile()
    {
        // Kestrel refuses the write that would exceed the declared length before it sends a header.
        string splice = await OutcomeAsync(useSplice: true, File, 0, null, contentLength: FileSize - 10);
        string sockets = await OutcomeAsync(useSplice: false, File, 0, null, contentLength: FileSize - 10);
        Assert.Equal(sockets, splice);
        Assert.Equal(typeof(InvalidOperationException).FullName + " before the headers", splice);
    }

    [Fact]
    public async Task AnAlreadyCanceledToken()
    {
        string splice = await OutcomeAsync(useSplice: true, File, 0, null, canceled: true);
        string sockets = await OutcomeAsync(useSplice: false, File, 0, null, canceled: true);
        Assert.Equal(sockets, splice);
        Assert.EndsWith(" before the headers", splice);
    }

    [Fact]
    public async Task TheServerKeepsServingAfterAFailedSend()
    {
        await using var host = await SpliceTestHost.StartAsync(app =>
        {
            app.MapGet("/missing", (HttpContext context) => context.Response.SendFileAsync(Path.Combine(files.Root, "missing.bin")));
            app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(File));
        });
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage failed = await client.GetAsync("/missing").WaitAsync(Waits.Response);
        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, failed.StatusCode);
        Assert.Empty(await failed.Content.ReadAsByteArrayAsync());
        byte[] body = await client.GetByteArrayAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(body));
        Assert.Equal(1, host.Metrics.AcceptedConnections);
    }
}
