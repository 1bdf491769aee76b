using SpliceTransport.Http;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>
/// The less travelled error paths: sendfile refused (the copy path), a file that cannot be read in the middle
/// of a response, a reset seen by recv, a write blocked in the application when the peer goes, and a socket
/// option that fails at accept. Each ends in the right state: the bytes right, or the connection closed.
/// </summary>
public class ErrorPathTests(FileFixture files, ITestOutputHelper output) : IClassFixture<FileFixture>
{
    private const long FileSize = 1024 * 1024 + 3;

    private const int EIO = 5;

    private static readonly string[] Ended = ["completed", nameof(OperationCanceledException), nameof(TaskCanceledException), nameof(IOException)];

    private string File => files.Get("errors/file.bin", FileSize);

    /// <summary>
    /// A host whose /file sends <see cref="File"/> with SendFileAsync and whose /stream writes 8 MiB in 16 KiB
    /// writes with no cancellation token; each reports how it ended to <paramref name="outcomes"/>.
    /// </summary>
    private Task<SpliceTestHost> StartAsync(FaultInjectingSyscalls syscalls, Channel<string>? outcomes = null)
    {
        string path = File;
        outcomes ??= Channel.CreateUnbounded<string>();
        return FaultKit.StartAsync(syscalls, app =>
        {
            app.MapGet("/plaintext", () => "Hello, World!");
            app.MapGet("/file", (HttpContext context) =>
                RecordAsync(outcomes.Writer, () => context.Response.SendFileAsync(path, 0, null, context.RequestAborted)));
            app.MapGet("/stream", (HttpContext context) => RecordAsync(outcomes.Writer, async () =>
            {
                byte[] block = new byte[16 * 1024];
                for (int i = 0; i < 512; i++)
                {
                    await context.Response.Body.WriteAsync(block, CancellationToken.None);
                }
            }));
        });
    }

    private static async Task RecordAsync(ChannelWriter<string> outcomes, Func<Task> send)
    {
        string outcome = "completed";
        try
        {
            await send();
        }
        catch (Exception ex)
        {
            outcome = ex.GetType().Name;
        }
        finally
        {
            outcomes.TryWrite(outcome);
        }
    }

    [Fact]
    public async Task SendFileRefusedFallsBackToCopyEvenWithShortWrites()
    {
        var syscalls = new FaultInjectingSyscalls { MaxSendMessageBytes = 97, SendFileFault = (_, _) => SyscallResult.Failure(Errno.EINVAL) };
        var outcomes = Channel.CreateUnbounded<string>();
        await using SpliceTestHost host = await StartAsync(syscalls, outcomes);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/file"));
            RawHttpResponse response = await connection.ReadResponseAsync().WaitAsync(Waits.Response);
            response.AssertServedBySplice();
            Assert.Equal(TestFiles.Sha256(File), TestFiles.Sha256(response.Body));
        }
        Assert.Equal("completed", await outcomes.Reader.ReadAsync().AsTask().WaitAsync(Waits.Short));
        await Bytes.EventuallyAsync(() => host.Metrics.Fallbacks(FallbackReasons.SendFileUnsupported) == 1, "one copied response");
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
        Assert.True(syscalls.ShortenedSendMessages > 1000, $"Only {syscalls.ShortenedSendMessages} short sendmsg calls.");
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        host.Logs.AssertNoErrors();
    }

    /// <summary>Faults on the file side, after some of the file has left.</summary>
    public static TheoryData<string> FileFaults => ["sendfile EINVAL after the first byte", "sendfile EIO", "pread EIO in the copy path", "pread EIO while prefetching a cold chunk"];

    private static FaultInjectingSyscalls FileFault(string fault) => fault switch
    {
        "sendfile EINVAL after the first byte" => new FaultInjectingSyscalls
        {
            // Not the copy fallback: that is for a file sendfile refuses before its first byte.
            MaxSendFileBytes = 64 * 1024,
            SendFileFault = (socket, _) => socket.SendFileBytes > 0 ? SyscallResult.Failure(Errno.EINVAL) : null,
        },
        "sendfile EIO" => new FaultInjectingSyscalls
        {
            MaxSendFileBytes = 64 * 1024,
            SendFileFault = (socket, _) => socket.SendFileBytes > 0 ? SyscallResult.Failure(EIO) : null,
        },
        "pread EIO in the copy path" => new FaultInjectingSyscalls
        {
            SendFileFault = (_, _) => SyscallResult.Failure(Errno.EINVAL),
            ReadFileFault = (offset, _) => offset > 0 ? SyscallResult.Failure(EIO) : null,
        },
        "pread EIO while prefetching a cold chunk" => new FaultInjectingSyscalls
        {
            // Nothing cached: the chunk is read off the loop first, and its second read fails.
            CachedPagesFault = (_, _) => SyscallResult.Success(0),
            ReadFileFault = (offset, _) => offset >= 256 * 1024 ? SyscallResult.Failure(EIO) : null,
        },
        _ => throw new ArgumentOutOfRangeException(nameof(fault)),
    };

    [Theory]
    [MemberData(nameof(FileFaults))]
    public async Task AFileErrorMidResponseResetsTheConnection(string fault)
    {
        FaultInjectingSyscalls syscalls = FileFault(fault);
        var outcomes = Channel.CreateUnbounded<string>();
        await using SpliceTestHost host = await StartAsync(syscalls, outcomes);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/file"));
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
            output.WriteLine($"{bytes.Length} bytes, then {(object?)error ?? "FIN"}");
            Assert.Equal(SocketError.ConnectionReset, error);
            FaultKit.AssertPrefixOfFile(bytes, File, FileSize);
            Assert.True(bytes.Length < FileSize, "The whole file arrived despite the fault.");
        }
        Assert.Contains(await outcomes.Reader.ReadAsync().AsTask().WaitAsync(Waits.Short), Ended);
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        Assert.Equal(1, Assert.Single(syscalls.Sockets).ResetOnCloseCalls);
        Assert.Equal(0, await OpenFiles.WaitUntilClosedAsync(File, Waits.Short));
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
    }

    [Theory]
    [MemberData(nameof(FileFaults))]
    public async Task AFileErrorMidResponseIsReported(string fault)
    {
        // Kestrel's own path lets the read error out of SendFileAsync (and logs it as an unhandled exception),
        // and a file truncated mid-send is logged at Error (FileTruncated). An unreadable file should be at least
        // as visible: an exception from SendFileAsync that names a failure (a cancellation does not: it is also
        // what a client that leaves causes), or a log entry at Warning or above.
        FaultInjectingSyscalls syscalls = FileFault(fault);
        var outcomes = Channel.CreateUnbounded<string>();
        await using SpliceTestHost host = await StartAsync(syscalls, outcomes);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/file"));
            await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
        }
        string outcome = await outcomes.Reader.ReadAsync().AsTask().WaitAsync(Waits.Short);
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        bool logged = host.Logs.AtLeast(LogLevel.Warning).Any();
        bool thrown = outcome is not ("completed" or nameof(OperationCanceledException) or nameof(TaskCanceledException));
        output.WriteLine($"SendFileAsync: {outcome}");
        Assert.True(thrown || logged,
            $"SendFileAsync said '{outcome}' and nothing was logged at Warning or above:\n" + string.Join("\n", host.Logs.Entries));
    }

    [Fact]
    public async Task ARecvResetClosesTheConnection()
    {
        var syscalls = new FaultInjectingSyscalls
        {
            // The first request is read; the recv that would read the second says the peer reset.
            ReceiveFault = socket => socket.ReceiveCalls >= 2 ? SyscallResult.Failure(Errno.ECONNRESET) : null,
        };
        await using SpliceTestHost host = await StartAsync(syscalls);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/plaintext"));
            Assert.Equal("Hello, World!", (await connection.ReadResponseAsync().WaitAsync(Waits.Short)).BodyText);
            await connection.SendAsync(RawHttpConnection.Get("/plaintext"));
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
            Assert.True(error is null or SocketError.ConnectionReset, $"The connection ended with {error}.");
            Assert.Empty(bytes);
        }
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        Assert.Equal(1, syscalls.InjectedFaults);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task AResetUnblocksAStreamingWriteWithoutACancellationToken()
    {
        // The handler writes 8 MiB with no token to a client that reads; sendmsg fails with ECONNRESET after
        // a few calls. The writes blocked on back-pressure must end (Kestrel drops writes to an aborted response).
        var syscalls = new FaultInjectingSyscalls
        {
            SendMessageFault = (socket, _) => socket.SendMessageCalls > 10 ? SyscallResult.Failure(Errno.ECONNRESET) : null,
        };
        var outcomes = Channel.CreateUnbounded<string>();
        await using SpliceTestHost host = await StartAsync(syscalls, outcomes);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/stream"));
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
            output.WriteLine($"{bytes.Length} bytes, then {(object?)error ?? "FIN"}");
            Assert.Equal(SocketError.ConnectionReset, error);
            Assert.True(bytes.Length < 8 * 1024 * 1024);
        }
        Assert.Contains(await outcomes.Reader.ReadAsync().AsTask().WaitAsync(Waits.Short), Ended);
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        Assert.Equal(1, Assert.Single(syscalls.Sockets).ResetOnCloseCalls);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task ASetOptionFailureAtAcceptDropsOnlyThatConnection()
    {
        // TCP_NODELAY fails as it does when the peer reset before it was set: that connection is closed and
        // logged, never handed to Kestrel or counted; the next one is served.
        int failed = 0;
        var syscalls = new FaultInjectingSyscalls
        {
            SetOptionFault = _ => Interlocked.Exchange(ref failed, 1) == 0 ? SyscallResult.Failure(Errno.ECONNRESET) : null,
        };
        await using SpliceTestHost host = await StartAsync(syscalls);
        await using (RawHttpConnection first = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await first.SendAsync(RawHttpConnection.Get("/plaintext"));
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(first.Socket, Waits.Short);
            Assert.True(error is null or SocketError.ConnectionReset, $"The connection ended with {error}.");
            Assert.Empty(bytes);
        }
        using (HttpClient client = host.CreateClient())
        {
            Assert.Equal("Hello, World!", await client.GetStringAsync("/plaintext").WaitAsync(Waits.Short));
        }
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        LogCollector.Entry warning = Assert.Single(host.Logs.AtLeast(LogLevel.Warning));
        Assert.Equal("AcceptFailed", warning.EventId.Name);
        Assert.Contains("TCP_NODELAY", warning.Exception?.Message, StringComparison.Ordinal);
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
    }
}
