using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using BadHttpRequestException = Microsoft.AspNetCore.Http.BadHttpRequestException;

namespace SpliceTransport.Tests.Uploads;

/// <summary>
/// The spliced upload path itself (socket → kernel pipe → file, placeholders through Kestrel), on real Kestrel
/// over real loopback sockets, with the seam counting the splices. The connection's input is kept small
/// (<see cref="InputBuffer"/>), so that most of a body is still in the socket when the app asks for it, whatever
/// the timing: the receive pump stops reading when that much is unread.
/// </summary>
public class SplicedUploadTests
{
    private const int InputBuffer = 64 * 1024;
    private const int BodySize = 1024 * 1024 + 7;

    private static Task<UploadHost> StartAsync(FaultInjectingSyscalls syscalls, Action<KestrelServerLimits>? limits = null) =>
        UploadHost.StartAsync(limits: limits, configureTransport: options =>
        {
            options.Syscalls = syscalls;
            options.MaxReadBufferSize = InputBuffer;
        });

    /// <summary>
    /// PUTs a new body to <paramref name="url"/> and checks that it was saved whole as <paramref name="savedAs"/> by
    /// copying, for <paramref name="reason"/>, with not a byte spliced off the socket.
    /// </summary>
    private static async Task AssertCopiedAsync(UploadHost uploads, FaultInjectingSyscalls syscalls, string url, string savedAs, string reason)
    {
        using HttpClient client = uploads.Host.CreateClient();
        byte[] body = UploadBodies.Random(BodySize);

        using HttpResponseMessage response = await client.PutAsync(url, new ByteArrayContent(body)).WaitAsync(Waits.Response);

        Assert.Equal(System.Net.HttpStatusCode.Created, response.StatusCode);
        Assert.Equal(new UploadOutcome(body.Length, false, reason, 0), UploadOutcome.Parse(await response.Content.ReadAsStringAsync()));
        Assert.Equal(0, syscalls.SplicedInBytes);
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf(savedAs)));
    }

    [Fact]
    public async Task PipelinedGetAfterASplicedBodyIsAnswered()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] body = UploadBodies.Random(BodySize);
        using var all = new MemoryStream();
        all.Write(Encoding.ASCII.GetBytes(UploadBodies.PutHead("/upload/first.bin", body.Length)));
        all.Write(body);
        all.Write(Encoding.ASCII.GetBytes(RawHttpConnection.Get("/after")));

        // One send: the splice must stop exactly at the Content-Length, leaving the GET in the socket.
        await connection.SendAsync(all.ToArray());

        RawHttpResponse put = await connection.ReadResponseAsync();
        Assert.Equal(StatusCodes.Status201Created, put.StatusCode);
        UploadOutcome outcome = UploadOutcome.Parse(put.BodyText);
        Assert.True(outcome.ZeroCopy, outcome.ToString());
        Assert.Equal(outcome.SplicedBytes, syscalls.SplicedInBytes);
        Assert.Equal("after", (await connection.ReadResponseAsync()).BodyText);
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("first.bin")));
        // The placeholders were slices of the shared scratch, and neither the body nor the GET behind it was written there.
        Assert.Equal(-1, SpliceTransport.Transport.ScratchMemory.Shared.GetSpan().IndexOfAnyExcept((byte)0));
    }

    [Fact]
    public async Task ExpectContinueBodyIsSplicedAfterTheHundred()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] body = UploadBodies.Random(BodySize);

        await connection.SendAsync(UploadBodies.PutHead("/upload/continued.bin", body.Length, "Expect: 100-continue\r\n"));
        Assert.Equal(StatusCodes.Status100Continue, (await connection.ReadResponseAsync()).StatusCode);
        await connection.SendAsync(body);
        RawHttpResponse response = await connection.ReadResponseAsync();

        Assert.Equal(StatusCodes.Status201Created, response.StatusCode);
        UploadOutcome outcome = UploadOutcome.Parse(response.BodyText);
        Assert.True(outcome.ZeroCopy, outcome.ToString());
        Assert.True(outcome.SplicedBytes > 0);
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("continued.bin")));
    }

    [Fact]
    public async Task ShortSplicesStillSaveTheBodyWhole()
    {
        // splice may return less than asked at any time: the pump must fill and write again, never wait for an edge.
        var syscalls = new FaultInjectingSyscalls { MaxSpliceBytes = 3000 };
        await using UploadHost uploads = await StartAsync(syscalls);
        using HttpClient client = uploads.Host.CreateClient();
        byte[] body = UploadBodies.Random(BodySize);

        using HttpResponseMessage response = await client.PutAsync("/upload/short.bin", new ByteArrayContent(body)).WaitAsync(Waits.Response);

        Assert.Equal(System.Net.HttpStatusCode.Created, response.StatusCode);
        UploadOutcome outcome = UploadOutcome.Parse(await response.Content.ReadAsStringAsync());
        Assert.True(outcome.ZeroCopy, outcome.ToString());
        Assert.True(syscalls.ShortenedSplices > 0, "No splice was cut short.");
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(uploads.PathOf("short.bin")));
    }

    [Theory]
    [InlineData(Errno.EMFILE, "descriptor_limit")]
    [InlineData(Errno.ENFILE, "system_descriptor_limit")]
    public async Task RefusedPipeFallsBackToCopyingWithTheReason(int errno, string reason)
    {
        var syscalls = new FaultInjectingSyscalls { CreatePipeErrno = errno };
        await using UploadHost uploads = await StartAsync(syscalls);

        await AssertCopiedAsync(uploads, syscalls, "/upload/refused.bin", "refused.bin", reason);
        Assert.Equal(1, uploads.Fallbacks(reason));
    }

    [Fact]
    public async Task FullDiskMidSpliceIsAnIOExceptionAndTheConnectionGoesOn()
    {
        // The second pipe load's write into the file says ENOSPC: placeholders stop, the pipe's bytes and the rest of
        // the body reach Kestrel as real bytes, so it can drain the body and keep the connection.
        int fileWrites = 0;
        var syscalls = new FaultInjectingSyscalls
        {
            SpliceFault = (socket, _) => socket is null && Interlocked.Increment(ref fileWrites) == 2 ? SyscallResult.Failure(Errno.ENOSPC) : null,
        };
        await using UploadHost uploads = await StartAsync(syscalls);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] body = UploadBodies.Random(BodySize);

        await connection.SendAsync(UploadBodies.PutHead("/upload/full.bin", body.Length));
        await connection.SendAsync(body);
        RawHttpResponse response = await connection.ReadResponseAsync();

        Assert.Equal(StatusCodes.Status500InternalServerError, response.StatusCode);
        IOException failure = Assert.IsAssignableFrom<IOException>(await uploads.FirstFailure.Task.WaitAsync(Waits.Short));
        Assert.Contains("ENOSPC", failure.Message);
        Assert.Contains(uploads.PathOf("full.bin"), failure.Message);
        Assert.Empty(uploads.Entries());
        await connection.SendAsync(RawHttpConnection.Get("/after"));
        Assert.Equal("after", (await connection.ReadResponseAsync()).BodyText);
        Assert.Equal(1, uploads.Fallbacks("file_failed"));
    }

    [Fact]
    public async Task ClientResetMidSpliceLeavesNoFileDescriptorOrPipe()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);
        const string previous = "the file as it was before the upload";
        File.WriteAllText(uploads.PathOf("victim.bin"), previous);
        var connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);

        await connection.SendAsync(UploadBodies.PutHead("/upload/victim.bin", 16L * BodySize)); // Under Kestrel's 30 MB limit.
        await connection.SendAsync(UploadBodies.Random(16 * InputBuffer)); // Past what the input and the first reads take.
        await uploads.Started.Task.WaitAsync(Waits.Short);
        // Wait until the splice has begun, so that the reset meets it and not the copy before it.
        await Bytes.EventuallyAsync(() => syscalls.SplicedInBytes > 0, "a spliced byte");
        connection.Reset();

        Exception failure = await uploads.FirstFailure.Task.WaitAsync(Waits.Short);
        Assert.True(failure is IOException or BadHttpRequestException, $"The app saw {failure}");
        uploads.AssertNothingLeft("victim.bin", previous, syscalls);
    }

    [Fact]
    public async Task StalledUploaderMidSpliceGets408AndNoFile()
    {
        var syscalls = new FaultInjectingSyscalls();
        // A rate the first mebibyte, sent at once, meets, and that the stall soon does not: Kestrel averages over the read time.
        await using UploadHost uploads = await StartAsync(syscalls, limits =>
            limits.MinRequestBodyDataRate = new MinDataRate(bytesPerSecond: 4_000_000, gracePeriod: TimeSpan.FromSeconds(1.5)));
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);

        await connection.SendAsync(UploadBodies.PutHead("/upload/slow.bin", 16L * BodySize)); // Under Kestrel's 30 MB limit.
        await connection.SendAsync(UploadBodies.Random(16 * InputBuffer)); // Past what the input and the first reads take.
        await Bytes.EventuallyAsync(() => syscalls.SplicedInBytes > 0, "a spliced byte");

        // Then nothing: Kestrel times the pending body read and gives up on the rate.
        Exception failure = await uploads.FirstFailure.Task.WaitAsync(Waits.Response);
        BadHttpRequestException rejected = Assert.IsAssignableFrom<BadHttpRequestException>(failure);
        Assert.Equal(StatusCodes.Status408RequestTimeout, rejected.StatusCode);
        Assert.True(await connection.WaitForCloseAsync(Waits.Short), "The stalled connection was not closed.");
        uploads.AssertNothingLeft(syscalls: syscalls);
    }

    [Fact]
    public async Task AppendOnlyHandleGetsTheBytesCopiedOutOfThePipe()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);
        string path = uploads.PathOf("append.bin");
        File.WriteAllBytes(path, []);
        using HttpClient client = uploads.Host.CreateClient();
        byte[] body = UploadBodies.Random(BodySize);

        using HttpResponseMessage response = await client.PutAsync($"/device?path={Uri.EscapeDataString(path)}&appendFlag=true", new ByteArrayContent(body))
            .WaitAsync(Waits.Response);

        Assert.Equal(System.Net.HttpStatusCode.Created, response.StatusCode);
        UploadOutcome outcome = UploadOutcome.Parse(await response.Content.ReadAsStringAsync());
        // splice into an O_APPEND file says EINVAL: the bytes still left the socket by splice, then were copied out.
        Assert.Equal(new UploadOutcome(body.Length, false, "file_splice_unsupported", 0), outcome);
        Assert.True(syscalls.SplicedInBytes > 0, "Nothing was spliced off the socket.");
        Assert.Equal(TestFiles.Sha256(body), TestFiles.Sha256(path));
    }

    [Fact]
    public async Task BodyReadBeforeIsCopiedWithTheReason()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);

        await AssertCopiedAsync(uploads, syscalls, "/peeked/peeked.bin", "peeked.bin", "body_read_before");
    }

    [Fact]
    public async Task CanceledMidSpliceLeavesNoFileNoDescriptorAndNoPipeInUse()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);
        const string previous = "the file as it was before the upload";
        File.WriteAllText(uploads.PathOf("kept.bin"), previous);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] body = UploadBodies.Random(4 * BodySize);

        await connection.SendAsync(UploadBodies.PutHead("/cancellable/kept.bin", body.Length));
        await connection.SendAsync(body.AsMemory(0, body.Length / 2));
        await Bytes.EventuallyAsync(() => syscalls.SplicedInBytes > 0, "a spliced byte");
        uploads.Cancel.Cancel();

        Assert.IsAssignableFrom<OperationCanceledException>(await uploads.FirstFailure.Task.WaitAsync(Waits.Short));
        // The app's save has returned: the pump has released the file, whatever it does with the rest of the body.
        Assert.Equal(StatusCodes.Status500InternalServerError, (await connection.ReadResponseAsync()).StatusCode);
        uploads.AssertNothingLeft("kept.bin", previous, syscalls);
    }

    [Fact]
    public async Task DiskThatCannotHoldTheBodySaysSoBeforeItIsReceived()
    {
        var syscalls = new FaultInjectingSyscalls { PreallocateErrno = Errno.ENOSPC };
        await using UploadHost uploads = await StartAsync(syscalls);
        using HttpClient client = uploads.Host.CreateClient();

        using HttpResponseMessage response = await client.PutAsync("/upload/huge.bin", new ByteArrayContent(UploadBodies.Random(BodySize))).WaitAsync(Waits.Response);

        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, response.StatusCode);
        IOException failure = Assert.IsAssignableFrom<IOException>(await uploads.FirstFailure.Task.WaitAsync(Waits.Short));
        Assert.Contains("fallocate", failure.Message);
        Assert.Contains("ENOSPC", failure.Message);
        Assert.Contains(uploads.PathOf("huge.bin"), failure.Message);
        Assert.Equal(1, syscalls.PreallocateCalls);
        Assert.Equal(0, syscalls.SplicedInBytes); // Refused before the splice began.
        Assert.Empty(uploads.Entries());
    }

    [Fact]
    public async Task ClientFinMidSpliceIsAShortBodyWithNoFileLeft()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);

        await connection.SendAsync(UploadBodies.PutHead("/upload/short.bin", 16L * BodySize));
        await connection.SendAsync(UploadBodies.Random(16 * InputBuffer));
        await Bytes.EventuallyAsync(() => syscalls.SplicedInBytes > 0, "a spliced byte");
        // A FIN where the body should go on: the splice reads 0, and Kestrel reports the body as cut short.
        connection.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Send);

        Exception failure = await uploads.FirstFailure.Task.WaitAsync(Waits.Short);
        Assert.True(failure is IOException or BadHttpRequestException, $"The app saw {failure}");
        uploads.AssertNothingLeft(syscalls: syscalls);
    }

    [Fact]
    public async Task TurnedOffUploadsAreCopiedWithTheReason()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await UploadHost.StartAsync(configureTransport: options =>
        {
            options.Syscalls = syscalls;
            options.MaxReadBufferSize = InputBuffer;
            options.ZeroCopyUploads = false;
        });

        await AssertCopiedAsync(uploads, syscalls, "/upload/off.bin", "off.bin", "disabled");
    }

    [Fact]
    public async Task FailedCopyOutLosesNoByteAndTheConnectionGoesOn()
    {
        // An O_APPEND file takes the bytes copied out of the pipe; the second copy's write fails: what that copy had
        // read out of the pipe must reach Kestrel ahead of the pipe's rest, or Kestrel would take the next request's
        // bytes for the body's.
        int writes = 0;
        var syscalls = new FaultInjectingSyscalls { WriteFileFault = () => Interlocked.Increment(ref writes) == 2 ? SyscallResult.Failure(Errno.ENOSPC) : null };
        await using UploadHost uploads = await StartAsync(syscalls);
        string path = uploads.PathOf("append.bin");
        File.WriteAllBytes(path, []);
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] body = UploadBodies.Random(BodySize);

        await connection.SendAsync(UploadBodies.PutHead($"/device?path={Uri.EscapeDataString(path)}&appendFlag=true", body.Length));
        await connection.SendAsync(body);

        Assert.Equal(StatusCodes.Status500InternalServerError, (await connection.ReadResponseAsync()).StatusCode);
        IOException failure = Assert.IsAssignableFrom<IOException>(await uploads.FirstFailure.Task.WaitAsync(Waits.Short));
        Assert.Contains("ENOSPC", failure.Message);
        await connection.SendAsync(RawHttpConnection.Get("/after"));
        Assert.Equal("after", (await connection.ReadResponseAsync()).BodyText);
    }

    [Fact]
    public async Task FolderThatCannotBeWrittenIsAFailureAndTheConnectionGoesOn()
    {
        await using UploadHost uploads = await StartAsync(new FaultInjectingSyscalls());
        await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(uploads.Host.Port, timeouts: Waits.Raw);
        byte[] body = UploadBodies.Random(BodySize);

        await connection.SendAsync(UploadBodies.PutHead("/nofolder/lost.bin", body.Length));
        await connection.SendAsync(body);

        Assert.Equal(StatusCodes.Status500InternalServerError, (await connection.ReadResponseAsync()).StatusCode);
        Assert.IsAssignableFrom<IOException>(await uploads.FirstFailure.Task.WaitAsync(Waits.Short));
        // The first read was given back before the failure, so Kestrel drained the body and kept the connection.
        await connection.SendAsync(RawHttpConnection.Get("/after"));
        Assert.Equal("after", (await connection.ReadResponseAsync()).BodyText);
    }

    [Fact]
    public async Task ChangedContentLengthIsNeverSpliced()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using UploadHost uploads = await StartAsync(syscalls);

        // Splicing by the changed header would have read past the body; Kestrel's framing is what is saved.
        await AssertCopiedAsync(uploads, syscalls, "/relength/relength.bin", "relength.bin", "body_wrapped");
    }
}
