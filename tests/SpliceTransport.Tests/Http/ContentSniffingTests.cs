using System.Security.Cryptography;
using System.Text;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// With SniffContentType, a file response without a Content-Type gets one from its first 512 bytes (Go's
/// net/http DetectContentType): those bytes go through the normal path, the rest zero-copy, and the client
/// still gets exactly the file.
/// </summary>
public class ContentSniffingTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const int FileSize = 300_001;

    private const int SniffLength = 512;

    private static byte[] WithPrefix(byte[] prefix, Func<int, byte[]> rest)
    {
        byte[] tail = rest(FileSize - prefix.Length);
        return [.. prefix, .. tail];
    }

    private static byte[] Text(int length)
    {
        var text = new StringBuilder();
        while (text.Length < length)
        {
            text.Append("The quick brown fox jumps over the lazy dog. ");
        }
        return Encoding.ASCII.GetBytes(text.ToString(0, length));
    }

    public static TheoryData<string, string> Kinds => new()
    {
        { "png", "image/png" },
        { "html", "text/html; charset=utf-8" },
        { "text", "text/plain; charset=utf-8" },
        { "binary", "application/octet-stream" },
        { "pdf", "application/pdf" },
    };

    private string Create(string kind)
    {
        byte[] content = kind switch
        {
            "png" => WithPrefix([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A], RandomNumberGenerator.GetBytes),
            "html" => WithPrefix(Encoding.ASCII.GetBytes("<!DOCTYPE html><html><body>"), Text),
            "text" => Text(FileSize),
            // A control byte that no text has, then noise: no signature, and binary.
            "binary" => WithPrefix([0x13, 0x00, 0xFE, 0x7F], RandomNumberGenerator.GetBytes),
            "pdf" => WithPrefix(Encoding.ASCII.GetBytes("%PDF-1.7\n"), RandomNumberGenerator.GetBytes),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        string path = Path.Combine(files.Root, "sniff", kind + ".dat");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        System.IO.File.WriteAllBytes(path, content);
        return path;
    }

    private static Task<SpliceTestHost> StartAsync(string path, bool sniff = true) => SpliceTestHost.StartAsync(
        app => app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(path)),
        options => options.SniffContentType = sniff);

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task ASniffedTypeAndTheSameBytesMostlyZeroCopy(string kind, string expectedType)
    {
        string path = Create(kind);
        await using var host = await StartAsync(path);
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(expectedType, response.Content.Headers.ContentType?.ToString());
        Assert.Equal(FileSize, response.Content.Headers.ContentLength);
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(FileSize - SniffLength, m => m.ZeroCopyBytes);
        Assert.Equal(0, host.Metrics.AllFallbacks);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task AFileShorterThanTheSniffLengthIsSentWhole()
    {
        string path = Path.Combine(files.Root, "sniff", "short.txt");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        System.IO.File.WriteAllBytes(path, Text(100));
        await using var host = await StartAsync(path);
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal("text/plain; charset=utf-8", response.Content.Headers.ContentType?.ToString());
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        // Keep-alive: the next response on the connection is intact.
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await client.GetByteArrayAsync("/f").WaitAsync(Waits.Response)));
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        Assert.Equal(0, host.Metrics.ZeroCopyBytes);
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task AContentTypeSetByTheAppIsKeptAndNothingIsSniffed()
    {
        string path = Create("html");
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/f", (HttpContext context) =>
            {
                context.Response.ContentType = "application/x-custom";
                return context.Response.SendFileAsync(path);
            }),
            options => options.SniffContentType = true);
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal("application/x-custom", response.Content.Headers.ContentType?.ToString());
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
    }

    [Fact]
    public async Task WithoutTheOptionNoTypeIsSetAndEveryByteGoesZeroCopy()
    {
        string path = Create("png");
        await using var host = await StartAsync(path, sniff: false);
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Null(response.Content.Headers.ContentType);
        Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
    }

    [Fact]
    public async Task TheSniffedBytesComeFromTheRequestedOffset()
    {
        // A range that starts at the HTML part of a file whose first bytes are binary: the type describes the
        // bytes sent, so it is sniffed at the offset.
        string path = Path.Combine(files.Root, "sniff", "offset.dat");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        byte[] html = Encoding.ASCII.GetBytes("<html><body>" + new string('x', 5000));
        System.IO.File.WriteAllBytes(path, [.. new byte[] { 0x13, 0x00, 0x01, 0x02 }, .. RandomNumberGenerator.GetBytes(996), .. html]);
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/f", (HttpContext context) => context.Response.SendFileAsync(path, 1000, null)),
            options => options.SniffContentType = true);
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal("text/html; charset=utf-8", response.Content.Headers.ContentType?.ToString());
        Assert.Equal(TestFiles.Sha256(html), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "one zero-copy response");
        await host.Metrics.AssertEventuallyAsync(html.Length - SniffLength, m => m.ZeroCopyBytes);
    }
}
