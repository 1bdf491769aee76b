using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using SpliceTransport.Splice;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using BadHttpRequestException = Microsoft.AspNetCore.Http.BadHttpRequestException;

namespace SpliceTransport.Tests.Uploads;

/// <summary>
/// SaveBodyToFileAsync end to end, on real Kestrel over real loopback sockets, on SpliceTransport and on
/// Kestrel's socket transport: the file holds exactly the body (sha256), the result says how it got there, and
/// every failure leaves neither a file nor a descriptor behind.
/// </summary>
public class SaveBodyToFileTests
{
    private const int OneMebibyte = 1024 * 1024;

    /// <summary>
    /// The connection's input holds at most this much unread (SpliceTransportOptions.MaxReadBufferSize), so that the
    /// receive pump stops early and most of a body over it is left in the socket for the splice, however fast the
    /// client sends.
    /// </summary>
    private const int SmallInputBuffer = 64 * 1024;

    [Theory]
    [InlineData(true, 0)]
    [InlineData(true, 1)]
    [InlineData(true, 64 * 1024 - 1)]
    [InlineData(true, 64 * 1024)]
    [InlineData(true, OneMebibyte + 7)]
    [InlineData(false, 0)]
    [InlineData(false, 1)]
    [InlineData(false, 64 * 1024 - 1)]
    [InlineData(false, 64 * 1024)]
    [InlineData(false, OneMebibyte + 7)]
    public async Task ContentLengthBodyIsSavedWhole(bool useSplice, int size)
    {
        var syscalls = new FaultInjectingSyscalls();
        await using var uploads = await UploadHost.StartAsync(useSplice, configureTransport: options =>
        {
            options.Syscalls = syscalls;
            options.MaxReadBufferSize = SmallInputBuffer;
        });
        using HttpClient client = uploads.Host.CreateClient();
        byte[] body = UploadBodies.Random(size);

        using HttpResponseMessage response = await client.PutAsync("/upload/file.bin", new ByteArrayContent(body)).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("file.bin")));
        Assert.Equal(["file.bin"], uploads.Entries());
        UploadOutcome outcome = UploadOutcome.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(size, outcome.BytesWritten);
        long splicedIn = syscalls.SplicedInBytes;
        if (!useSplice)
        {
            Assert.Equal(new UploadOutcome(size, false, "other_transport", 0), outcome);
        }
        else if (size <= 64 * 1024)
        {
            // At most 64 KiB: all of it is in the first read, or what is left is not worth a pipe.
            Assert.Equal(new UploadOutcome(size, false, "small_body", 0), outcome);
            Assert.Equal(1, uploads.Fallbacks("small_body"));
            Assert.Equal(0, splicedIn);
        }
        else
        {
            // Only what the input held before the splice was copied: the first read, and what came before the pause.
            Assert.True(outcome.ZeroCopy, outcome.ToString());
            Assert.InRange(outcome.SplicedBytes, size - 4 * SmallInputBuffer, size);
            Assert.Equal(outcome.SplicedBytes, splicedIn);
            Assert.InRange(syscalls.OpenPipes(), 0, PipePool.DefaultMaxPooled); // Only the pool's idle pipes stay open.
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ChunkedBodyIsSavedThroughTheFallbackAndCounted(bool useSplice)
    {
        await using var uploads = await UploadHost.StartAsync(useSplice);
        using HttpClient client = uploads.Host.CreateClient();
        byte[] body = UploadBodies.Random(3 * OneMebibyte + 17);
        using var request = new HttpRequestMessage(HttpMethod.Put, "/upload/chunked.bin") { Content = new StreamContent(new MemoryStream(body)) };
        request.Headers.TransferEncodingChunked = true;

        using HttpResponseMessage response = await client.SendAsync(request).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal($"{body.Length} False {(useSplice ? "chunked" : "other_transport")} 0", await response.Content.ReadAsStringAsync());
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("chunked.bin")));
        Assert.Equal(useSplice ? 1 : 0, uploads.Fallbacks("chunked"));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ThreeHundredMebibyteBodyIsSavedWhole(bool useSplice)
    {
        const long size = 300L * OneMebibyte;
        var syscalls = new FaultInjectingSyscalls();
        await using var uploads = await UploadHost.StartAsync(useSplice, limits: limits => limits.MaxRequestBodySize = null,
            configureTransport: options => options.Syscalls = syscalls);
        using HttpClient client = uploads.Host.CreateClient();
        using var source = new GeneratedBody(size, seed: 11);
        var content = new StreamContent(source, 256 * 1024);
        content.Headers.ContentLength = size;

        using HttpResponseMessage response = await client.PutAsync("/upload/big.bin", content).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        UploadOutcome outcome = UploadOutcome.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(source.Sha256(), TestFiles.Sha256(uploads.PathOf("big.bin")));
        Assert.Equal(size, outcome.BytesWritten);
        if (!useSplice)
        {
            Assert.Equal(new UploadOutcome(size, false, "other_transport", 0), outcome);
            return;
        }
        Assert.True(outcome.ZeroCopy, outcome.ToString());
        // Copied: what the input held when the app asked (up to MaxReadBufferSize, 1 MiB by default) and a receive in
        // flight; the pump is paused before that first read is given back, so no second input's worth follows it.
        Assert.InRange(outcome.SplicedBytes, size - OneMebibyte - 64 * 1024, size);
        Assert.Equal(outcome.SplicedBytes, syscalls.SplicedInBytes);
    }

    [Fact]
    public async Task HttpsBodyIsSavedThroughTheFallbackAndCounted()
    {
        await using var uploads = await UploadHost.StartAsync(urls: ["https://127.0.0.1:0"], configureBuilder: TestCertificates.UseTestCertificate);
        using HttpClient client = uploads.Host.CreateClient();
        byte[] body = UploadBodies.Random(200_000);

        using HttpResponseMessage response = await client.PutAsync("/upload/tls.bin", new ByteArrayContent(body)).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal($"{body.Length} False tls 0", await response.Content.ReadAsStringAsync());
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("tls.bin")));
        Assert.Equal(1, uploads.Fallbacks("tls"));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ReplacedRequestBodyIsWhatIsSaved(bool useSplice)
    {
        await using var uploads = await UploadHost.StartAsync(useSplice);
        using HttpClient client = uploads.Host.CreateClient();
        byte[] body = UploadBodies.Random(500_000);
        using var compressed = new MemoryStream();
        using (var gzip = new System.IO.Compression.GZipStream(compressed, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(body);
        }

        using HttpResponseMessage response = await client.PutAsync("/gunzip/plain.bin", new ByteArrayContent(compressed.ToArray())).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        // A wrapped body is never spliced: the socket's bytes are not what is saved.
        Assert.Equal(new UploadOutcome(body.Length, false, useSplice ? "body_wrapped" : "other_transport", 0),
            UploadOutcome.Parse(await response.Content.ReadAsStringAsync()));
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("plain.bin")));
    }

    [Fact]
    public async Task ExistingFileIsReplaced()
    {
        await using var uploads = await UploadHost.StartAsync();
        File.WriteAllText(uploads.PathOf("same.txt"), "the old content, longer than the new one");
        using HttpClient client = uploads.Host.CreateClient();

        using HttpResponseMessage response = await client.PutAsync("/upload/same.txt", new StringContent("new")).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal("new", File.ReadAllText(uploads.PathOf("same.txt")));
        Assert.Equal(["same.txt"], uploads.Entries());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ContentLengthOverMaxRequestBodySizeIs413WithNothingWritten(bool useSplice)
    {
        await using var uploads = await UploadHost.StartAsync(useSplice, limits => limits.MaxRequestBodySize = 1000);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);

        // Only the head: Kestrel must refuse on the declared length, before any body byte is needed.
        await connection.SendAsync(UploadBodies.PutHead("/upload/big.bin", 5000));
        RawHttpResponse response = await connection.ReadResponseAsync();

        Assert.Equal(StatusCodes.Status413PayloadTooLarge, response.StatusCode);
        Assert.IsAssignableFrom<BadHttpRequestException>(await uploads.FirstFailure.Task.WaitAsync(Waits.Short));
        Assert.Empty(uploads.Entries());
    }

    [Fact]
    public async Task ExpectContinueGetsItsHundredWhenTheBodyIsRead()
    {
        await using var uploads = await UploadHost.StartAsync();
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] body = UploadBodies.Random(100_000);

        await connection.SendAsync(UploadBodies.PutHead("/upload/continued.bin", body.Length, "Expect: 100-continue\r\n"));
        RawHttpResponse interim = await connection.ReadResponseAsync();
        Assert.Equal(StatusCodes.Status100Continue, interim.StatusCode);
        await connection.SendAsync(body);
        RawHttpResponse response = await connection.ReadResponseAsync();

        Assert.Equal(StatusCodes.Status201Created, response.StatusCode);
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("continued.bin")));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task PipelinedRequestsAfterTheBodyAreServedOnTheSameConnection(bool useSplice)
    {
        await using var uploads = await UploadHost.StartAsync(useSplice);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] first = UploadBodies.Random(300_000);
        byte[] second = UploadBodies.Random(5);
        using var all = new MemoryStream();
        all.Write(Encoding.ASCII.GetBytes(UploadBodies.PutHead("/upload/first.bin", first.Length)));
        all.Write(first);
        all.Write(Encoding.ASCII.GetBytes(RawHttpConnection.Get("/after")));
        all.Write(Encoding.ASCII.GetBytes(UploadBodies.PutHead("/upload/second.bin", second.Length)));
        all.Write(second);

        // All three requests in one send: the body must end exactly at its Content-Length.
        await connection.SendAsync(all.ToArray());

        Assert.Equal(StatusCodes.Status201Created, (await connection.ReadResponseAsync()).StatusCode);
        RawHttpResponse after = await connection.ReadResponseAsync();
        Assert.Equal("after", after.BodyText);
        Assert.Equal(StatusCodes.Status201Created, (await connection.ReadResponseAsync()).StatusCode);
        Assert.Equal(TestFiles.Sha256(first), TestFiles.Sha256(uploads.PathOf("first.bin")));
        Assert.Equal(TestFiles.Sha256(second), TestFiles.Sha256(uploads.PathOf("second.bin")));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ClientAbortMidBodyLeavesNoFileAndNoDescriptor(bool useSplice)
    {
        await using var uploads = await UploadHost.StartAsync(useSplice);
        const string previous = "the file as it was before the upload";
        File.WriteAllText(uploads.PathOf("victim.bin"), previous);
        var connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);

        await connection.SendAsync(UploadBodies.PutHead("/upload/victim.bin", OneMebibyte));
        await connection.SendAsync(UploadBodies.Random(64 * 1024));
        await uploads.Started.Task.WaitAsync(Waits.Short);
        connection.Reset();

        Exception failure = await uploads.FirstFailure.Task.WaitAsync(Waits.Short);
        Assert.True(failure is IOException or BadHttpRequestException, $"The app saw {failure}");
        // The temporary file is gone and the old file is untouched: replaced atomically or not at all.
        uploads.AssertNothingLeft("victim.bin", previous);
    }

    [Fact]
    public async Task StalledUploaderUnderMinRequestBodyDataRateIsDroppedWithNoFile()
    {
        await using var uploads = await UploadHost.StartAsync(limits: limits =>
            limits.MinRequestBodyDataRate = new MinDataRate(bytesPerSecond: 10_000, gracePeriod: TimeSpan.FromSeconds(1.5)));
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);

        await connection.SendAsync(UploadBodies.PutHead("/upload/slow.bin", OneMebibyte));
        await connection.SendAsync(UploadBodies.Random(100));

        // Kestrel times the body reads and gives up on the rate: a 408 and a close, and the app's read fails.
        Exception failure = await uploads.FirstFailure.Task.WaitAsync(Waits.Response);
        BadHttpRequestException rejected = Assert.IsAssignableFrom<BadHttpRequestException>(failure);
        Assert.Equal(StatusCodes.Status408RequestTimeout, rejected.StatusCode);
        Assert.True(await connection.WaitForCloseAsync(Waits.Short), "The stalled connection was not closed.");
        uploads.AssertNothingLeft();
    }

    [Fact]
    public async Task FullDiskIsAnIOExceptionNamingTheErrnoAndTheFile()
    {
        // /dev/full answers every write with ENOSPC, as a full file system would.
        await using var uploads = await UploadHost.StartAsync();
        using HttpClient client = uploads.Host.CreateClient();

        using HttpResponseMessage response = await client.PutAsync("/device?path=/dev/full", new ByteArrayContent(UploadBodies.Random(10_000))).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        IOException failure = Assert.IsAssignableFrom<IOException>(await uploads.FirstFailure.Task.WaitAsync(Waits.Short));
        Assert.Contains("ENOSPC", failure.Message);
        Assert.Contains("/dev/full", failure.Message);
    }

    [Fact]
    public async Task HandleFormWritesFromOffsetZeroWithoutTruncating()
    {
        const string mode = "Open";
        const string expected = "new body" + "ent, longer than the body";
        await using var uploads = await UploadHost.StartAsync();
        string path = uploads.PathOf("handle.txt");
        File.WriteAllText(path, "old content, longer than the body");
        using HttpClient client = uploads.Host.CreateClient();

        using HttpResponseMessage response = await client.PutAsync($"/device?path={Uri.EscapeDataString(path)}&mode={mode}", new StringContent("new body")).WaitAsync(Waits.Response);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal(expected, File.ReadAllText(path));
    }

    [Fact]
    public async Task FiftyParallelUploadsAreEachSavedWhole()
    {
        const int uploadCount = 50;
        await using var uploads = await UploadHost.StartAsync();
        using HttpClient client = uploads.Host.CreateClient();
        byte[][] bodies = Enumerable.Range(0, uploadCount).Select(i => UploadBodies.Random(64 * 1024 + i)).ToArray();

        HttpStatusCode[] statuses = await Task.WhenAll(bodies.Select(async (body, i) =>
        {
            using HttpResponseMessage response = await client.PutAsync($"/upload/part{i}.bin", new ByteArrayContent(body));
            return response.StatusCode;
        })).WaitAsync(Waits.Response);

        Assert.All(statuses, status => Assert.Equal(HttpStatusCode.Created, status));
        for (int i = 0; i < uploadCount; i++)
        {
            Assert.Equal(TestFiles.Sha256(bodies[i]), TestFiles.Sha256(uploads.PathOf($"part{i}.bin")));
        }
        Assert.Equal(uploadCount, uploads.Entries().Length);
    }

    [Fact]
    public async Task PathOfAFolderIsAnArgumentException()
    {
        var context = new DefaultHttpContext();
        ArgumentException error = await Assert.ThrowsAsync<ArgumentException>(() => context.Request.SaveBodyToFileAsync("/tmp/", CancellationToken.None));
        Assert.Contains("'/tmp/'", error.Message);
        Assert.Equal("path", error.ParamName);
    }
}
