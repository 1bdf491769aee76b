using System.Net.Sockets;
using System.Threading.Channels;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Tests.Transport;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.FaultInjection;

/// <summary>
/// The peer "resets" in the middle of a response: sendfile fails with ECONNRESET after a part of a file, or
/// sendmsg fails with EPIPE on the head of a keep-alive connection's third response. Each time the client gets
/// a correct prefix and then the end of the connection (never a hang), the handler's SendFileAsync ends, the
/// connection closes (active connections back to 0) and, over 50 connections, no descriptor is left behind.
/// In the process-wide collection because it counts the process's descriptors.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class ResetTests(FileFixture files, ITestOutputHelper output) : IClassFixture<FileFixture>
{
    private const int Repetitions = 50;

    /// <summary>Descriptors the runtime may open on its own meanwhile (thread pool, timers, diagnostics).</summary>
    private const int Tolerance = 10;

    private const long BigSize = 4L * 1024 * 1024;

    private const long ResetAfter = 256 * 1024;

    private const long SmallSize = 64 * 1024 + 5;

    [Fact]
    public async Task SendFileResetMidFileEndsTheConnectionAndLeaksNothing()
    {
        string path = files.Get("reset/big.bin", BigSize);
        var syscalls = new FaultInjectingSyscalls
        {
            // At most 64 KiB a call, so that the reset comes soon after ResetAfter rather than after a 2 MiB chunk.
            MaxSendFileBytes = 64 * 1024,
            SendFileFault = (socket, _) => socket.SendFileBytes >= ResetAfter ? SyscallResult.Failure(Errno.ECONNRESET) : null,
        };
        Channel<string> outcomes = Channel.CreateUnbounded<string>();
        await using SpliceTestHost host = await FaultKit.StartAsync(syscalls, app =>
            app.MapGet("/big", (HttpContext context) => SendAndRecordAsync(context, path, outcomes.Writer)));
        string expectedHash = TestFiles.Sha256(path);

        async Task OnceAsync()
        {
            await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
            await connection.SendAsync(RawHttpConnection.Get("/big"));
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
            output.WriteLine($"{bytes.Length} bytes, then {(object?)error ?? "FIN"}");

            Assert.True(error is null or SocketError.ConnectionReset, $"The connection ended with {error}.");
            FaultKit.AssertPrefixOfFile(bytes, path, BigSize);
            // sendfile sends at most 64 KiB a call, and fails once ResetAfter bytes have left.
            Assert.True(bytes.Length < ResetAfter + (64 * 1024) + 1024, $"{bytes.Length} bytes arrived although sendfile failed after {ResetAfter}.");
            Assert.Equal(expectedHash, TestFiles.Sha256(path)); // The file itself is untouched.

            // The handler's SendFileAsync ends: it returns or throws, it does not wait forever.
            string outcome = await outcomes.Reader.ReadAsync().AsTask().WaitAsync(Waits.Short);
            Assert.Contains(outcome, new[] { "completed", nameof(OperationCanceledException), nameof(TaskCanceledException), nameof(IOException) });
            await FaultKit.WaitForNoActiveConnectionsAsync(host);
        }

        await RepeatWithoutLeaksAsync(host, path, OnceAsync);
        Assert.Equal(Repetitions + 1, syscalls.InjectedFaults);
        Assert.All(syscalls.Sockets, socket => Assert.Equal(1, socket.ResetOnCloseCalls));
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task SendMessageEpipeOnTheThirdResponseEndsTheConnectionAndLeaksNothing()
    {
        string path = files.Get("reset/small.bin", SmallSize);
        var syscalls = new FaultInjectingSyscalls
        {
            SendMessageFault = (_, responseHead) => responseHead == 3 ? SyscallResult.Failure(Errno.EPIPE) : null,
        };
        Channel<string> outcomes = Channel.CreateUnbounded<string>();
        await using SpliceTestHost host = await FaultKit.StartAsync(syscalls, app =>
            app.MapGet("/small", (HttpContext context) => SendAndRecordAsync(context, path, outcomes.Writer)));
        string expectedHash = TestFiles.Sha256(path);

        async Task OnceAsync()
        {
            await using RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw);
            for (int i = 1; i <= 2; i++)
            {
                await connection.SendAsync(RawHttpConnection.Get("/small"));
                RawHttpResponse response = await connection.ReadResponseAsync().WaitAsync(Waits.Short);
                Assert.Equal(200, response.StatusCode);
                Assert.Equal(expectedHash, TestFiles.Sha256(response.Body));
                Assert.Equal("completed", await outcomes.Reader.ReadAsync().AsTask().WaitAsync(Waits.Short));
            }

            await connection.SendAsync(RawHttpConnection.Get("/small"));
            (byte[] bytes, SocketError? error) = await FaultKit.ReadUntilClosedAsync(connection.Socket, Waits.Short);
            Assert.True(error is null or SocketError.ConnectionReset, $"The connection ended with {error}.");
            // sendmsg "failed" on the head, so no byte of the third response may have left.
            Assert.Empty(bytes);

            string outcome = await outcomes.Reader.ReadAsync().AsTask().WaitAsync(Waits.Short);
            Assert.Contains(outcome, new[] { "completed", nameof(OperationCanceledException), nameof(TaskCanceledException), nameof(IOException) });
            await FaultKit.WaitForNoActiveConnectionsAsync(host);
        }

        await RepeatWithoutLeaksAsync(host, path, OnceAsync);
        Assert.Equal(Repetitions + 1, syscalls.InjectedFaults);
        Assert.All(syscalls.Sockets, socket => Assert.Equal(1, socket.ResetOnCloseCalls));
        await host.Metrics.AssertEventuallyAsync(2 * (Repetitions + 1), m => m.ZeroCopyResponses);
        host.Logs.AssertNoErrors();
    }

    /// <summary>Sends the file and writes how SendFileAsync ended ("completed" or the exception's type).</summary>
    private static async Task SendAndRecordAsync(HttpContext context, string path, ChannelWriter<string> outcomes)
    {
        string outcome = "completed";
        try
        {
            await context.Response.SendFileAsync(path, 0, null, context.RequestAborted);
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

    /// <summary>
    /// Runs <paramref name="once"/> once to warm up (lazily made descriptors), takes the descriptor count, runs
    /// it <see cref="Repetitions"/> times and checks the count came back and the file is closed.
    /// </summary>
    private async Task RepeatWithoutLeaksAsync(SpliceTestHost host, string path, Func<Task> once)
    {
        await once();
        int baseline = FaultKit.OpenDescriptors();
        for (int i = 0; i < Repetitions; i++)
        {
            await once();
        }
        await FaultKit.WaitForNoActiveConnectionsAsync(host);
        Assert.Equal(0, await OpenFiles.WaitUntilClosedAsync(path, Waits.Short));
        await Poll.UntilAsync(() => FaultKit.OpenDescriptors() <= baseline + Tolerance, Waits.Short);
        int after = FaultKit.OpenDescriptors();
        output.WriteLine($"descriptors: baseline {baseline}, after {Repetitions} reset connections {after}");
        Assert.True(after <= baseline + Tolerance, $"{after - baseline} descriptors more than before {Repetitions} reset connections.");
        Assert.Equal(Repetitions + 1, host.Metrics.AcceptedConnections);
    }
}
