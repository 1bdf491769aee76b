using System.Diagnostics;
using System.IO.Compression;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.ResponseCompression;
using SpliceTransport.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Where raw file bytes cannot go on the wire, the file goes through Kestrel's normal path: the client gets
/// identical bytes, and the fallback is counted with its reason (or, where middleware takes the file before it
/// reaches us, simply nothing is counted as zero-copy).
/// </summary>
public class FallbackTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 1024 * 1024 + 321;

    private string File => files.Get("fallback/file.bin", FileSize);

    private async Task<SpliceTestHost> StartAsync(Action<WebApplication> configure, Action<WebApplicationBuilder>? builder = null,
        string[]? urls = null, bool useSplice = true)
    {
        _ = File;
        return await SpliceTestHost.StartAsync(configure, configureBuilder: builder, urls: urls, useSplice: useSplice);
    }

    private static async Task AssertFellBackAsync(SpliceTestHost host, string reason)
    {
        await Bytes.EventuallyAsync(() => host.Metrics.Fallbacks(reason) == 1, $"one fallback for '{reason}'");
        await host.Metrics.AssertEventuallyAsync(1, m => m.AllFallbacks);
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
        Assert.Equal(0, host.Metrics.ZeroCopyBytes);
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task TlsFallsBackWithReasonTls()
    {
        await using var host = await StartAsync(app => app.MapGet("/f", () => Results.File(File, "application/octet-stream")),
            TestCertificates.UseTestCertificate, urls: ["https://127.0.0.1:0"]);
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version11, response.Version);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await AssertFellBackAsync(host, FallbackReasons.Tls);
    }

    [Fact]
    public async Task Http2FallsBackWithReasonProtocol()
    {
        // HTTP/2 here runs over TLS too; the protocol is checked first, so the reason is "protocol".
        await using var host = await StartAsync(app => app.MapGet("/f", () => Results.File(File, "application/octet-stream")),
            TestCertificates.UseTestCertificate, urls: ["https://127.0.0.1:0"]);
        using HttpClient client = host.CreateClient(HttpVersion.Version20);
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(HttpVersion.Version20, response.Version);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await AssertFellBackAsync(host, FallbackReasons.Protocol);
    }

    [Fact]
    public async Task CleartextHttp2FallsBackWithReasonProtocol()
    {
        await using var host = await StartAsync(app => app.MapGet("/f", () => Results.File(File, "application/octet-stream")),
            builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen =>
                listen.Protocols = Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2)));
        using HttpClient client = host.CreateClient(HttpVersion.Version20); // h2c with prior knowledge
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(HttpVersion.Version20, response.Version);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await AssertFellBackAsync(host, FallbackReasons.Protocol);
    }

    [Fact]
    public async Task ConnectionMiddlewareFallsBackWithReasonTransportWrapped()
    {
        await using var host = await StartAsync(app => app.MapGet("/f", () => Results.File(File, "application/octet-stream")),
            builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen => listen.UseConnectionLogging())));
        using HttpClient client = host.CreateClient();
        using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
        TransportAssert.ServedBySplice(response);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        await AssertFellBackAsync(host, FallbackReasons.TransportWrapped);
    }

    [Fact]
    public async Task AChunkedResponseFallsBackWithReasonChunked()
    {
        byte[] prefix = Encoding.ASCII.GetBytes("prefix-before-the-file;");
        await using var host = await StartAsync(app => app.MapGet("/f", async (HttpContext context) =>
        {
            await context.Response.Body.WriteAsync(prefix);
            await context.Response.Body.FlushAsync();
            await context.Response.SendFileAsync(File);
        }));
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get("/f"));
        RawHttpResponse response = await connection.ReadResponseAsync();
        Assert.Equal("chunked", response.Header("Transfer-Encoding"));
        Assert.Equal(TestFiles.Sha256([.. prefix, .. System.IO.File.ReadAllBytes(File)]), TestFiles.Sha256(response.Body));
        await AssertFellBackAsync(host, FallbackReasons.Chunked);
    }

    [Fact]
    public async Task ResponseCompressionCompressesTheSameBytes()
    {
        await using var host = await StartAsync(
            app =>
            {
                app.UseResponseCompression();
                app.MapGet("/f", () => Results.File(File, "application/octet-stream"));
            },
            builder => builder.Services.AddResponseCompression(options =>
            {
                options.EnableForHttps = true;
                options.MimeTypes = ["application/octet-stream"];
                options.Providers.Add<GzipCompressionProvider>();
            }));
        using HttpClient client = host.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/f");
        request.Headers.AcceptEncoding.ParseAdd("gzip");
        using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);
        Assert.Equal("gzip", Assert.Single(response.Content.Headers.ContentEncoding));
        await using var gzip = new GZipStream(await response.Content.ReadAsStreamAsync(), CompressionMode.Decompress);
        Assert.Equal(TestFiles.Sha256(File), await TestFiles.Sha256Async(gzip).WaitAsync(Waits.Response));
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
        host.Logs.AssertNoErrors();

        // Without Accept-Encoding the same endpoint goes zero-copy again: compression only wraps when it compresses.
        byte[] plain = await client.GetByteArrayAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(plain));
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "the uncompressed response went zero-copy");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task OutputCachingServesTheSameBytes(bool useSplice)
    {
        await using var host = await StartAsync(
            app =>
            {
                app.UseOutputCache();
                app.MapGet("/f", () => Results.File(File, "application/octet-stream")).CacheOutput();
            },
            builder => builder.Services.AddOutputCache(), useSplice: useSplice);
        using HttpClient client = host.CreateClient();
        for (int i = 0; i < 2; i++)
        {
            using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        }
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    [Fact]
    public async Task ResponseCachingServesTheSameBytes()
    {
        await using var host = await StartAsync(
            app =>
            {
                app.UseResponseCaching();
                app.MapGet("/f", (HttpContext context) =>
                {
                    context.Response.Headers.CacheControl = "public, max-age=60";
                    return Results.File(File, "application/octet-stream");
                });
            },
            builder => builder.Services.AddResponseCaching(options => options.MaximumBodySize = 8 * FileSize));
        using HttpClient client = host.CreateClient();
        for (int i = 0; i < 2; i++)
        {
            using HttpResponseMessage response = await client.GetAsync("/f").WaitAsync(Waits.Response);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        }
        host.Logs.AssertNoErrors();
        host.Logs.AssertNoContentLengthMismatch();
    }

    /// <summary>Passes everything through to the stream it wraps, as a logging or hashing wrapper would.</summary>
    private sealed class PassThroughStream(Stream inner) : Stream
    {
        public long Written { get; private set; }

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("Synchronous writes are not used.");

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Written += buffer.Length;
            await inner.WriteAsync(buffer, cancellationToken);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }

    [Fact]
    public async Task AReplacedResponseBodySeesEveryByte()
    {
        long written = -1;
        await using var host = await StartAsync(app => app.MapGet("/f", async (HttpContext context) =>
        {
            var wrapper = new PassThroughStream(context.Response.Body);
            context.Response.Body = wrapper;
            context.Response.ContentLength = FileSize;
            await context.Response.SendFileAsync(File);
            written = wrapper.Written;
        }));
        using HttpClient client = host.CreateClient();
        byte[] body = await client.GetByteArrayAsync("/f").WaitAsync(Waits.Response);
        Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(body));
        Assert.Equal(FileSize, written);
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
        host.Logs.AssertNoErrors();
    }

    /// <summary>What a handler saw: the body the client got, or the exception SendFileAsync threw.</summary>
    private sealed record Outcome(int Status, string? TransferEncoding, string? ContentLength, string Body, string? Exception);

    private static RequestDelegate SendFileAndReport(string path, Action<string>? onException = null) => async context =>
    {
        try
        {
            await context.Response.SendFileAsync(path);
        }
        catch (Exception ex)
        {
            onException?.Invoke(ex.GetType().FullName!);
            if (!context.Response.HasStarted)
            {
                context.Response.StatusCode = 500;
                await context.Response.WriteAsync("exception: " + ex.GetType().FullName);
            }
        }
    };

    private static async Task<Outcome> GetOutcomeAsync(SpliceTestHost host, string url, string? exception)
    {
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
        await connection.SendAsync(RawHttpConnection.Get(url));
        RawHttpResponse response = await connection.ReadResponseAsync();
        return new Outcome(response.StatusCode, response.Header("Transfer-Encoding"), response.Header("Content-Length"),
            Encoding.UTF8.GetString(response.Body), exception);
    }

    [Theory]
    [InlineData("/proc/self/cmdline")]
    [InlineData("/proc/version")]
    public async Task AProcFileFallsBackWithReasonPseudoFileAndBehavesAsKestrel(string path)
    {
        var outcomes = new List<Outcome>();
        foreach (bool useSplice in new[] { true, false })
        {
            string? exception = null;
            await using var host = await StartAsync(app => app.MapGet("/f", SendFileAndReport(path, ex => exception = ex)), useSplice: useSplice);
            outcomes.Add(await GetOutcomeAsync(host, "/f", exception));
            if (useSplice)
            {
                await AssertFellBackAsync(host, FallbackReasons.PseudoFile);
            }
        }
        Assert.Equal(outcomes[1], outcomes[0]);
        // Kestrel itself reads the whole pseudo file (its size says 0), so the body is its real content.
        Assert.Equal(Encoding.UTF8.GetString(System.IO.File.ReadAllBytes(path)), outcomes[0].Body);
        Assert.NotEmpty(outcomes[0].Body);
    }

    [Fact]
    public async Task AFifoFallsBackWithReasonNotRegularFileAndBehavesAsKestrel()
    {
        byte[] data = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("fifo data; ", 1000)));
        var outcomes = new List<Outcome>();
        foreach (bool useSplice in new[] { true, false })
        {
            string fifo = Path.Combine(files.Root, $"fifo-{useSplice}");
            using (Process mkfifo = Process.Start("mkfifo", fifo))
            {
                await mkfifo.WaitForExitAsync().WaitAsync(Waits.Short);
                Assert.Equal(0, mkfifo.ExitCode);
            }
            // The writer blocks in open() until a reader opens the FIFO; if the server never does, the
            // cleanup below opens the read end itself so the thread ends.
            Task writer = Task.Factory.StartNew(() =>
            {
                using var stream = new FileStream(fifo, FileMode.Open, FileAccess.Write);
                try
                {
                    stream.Write(data);
                }
                catch (IOException)
                {
                    // The reader went away (EPIPE): what the server did is judged by the response.
                }
            }, TaskCreationOptions.LongRunning);

            string? exception = null;
            await using (var host = await StartAsync(app => app.MapGet("/f", SendFileAndReport(fifo, ex => exception = ex)), useSplice: useSplice))
            {
                outcomes.Add(await GetOutcomeAsync(host, "/f", exception));
                if (useSplice)
                {
                    await AssertFellBackAsync(host, FallbackReasons.NotRegularFile);
                }
            }
            if (!writer.IsCompleted)
            {
                using var unblock = new FileStream(fifo, FileMode.Open, FileAccess.Read);
                await writer.WaitAsync(Waits.Short);
            }
            await writer.WaitAsync(Waits.Short);
        }
        Assert.Equal(outcomes[1], outcomes[0]);
    }
}
