using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Transport;
using SpliceTransport.Forwarding;

namespace SpliceTransport.Tests.Splice;

/// <summary>
/// ForwardAsync's splice path with a real client, a real upstream and the proxy on loopback, the system calls
/// counted (and faulted) by the seam: every byte arrives (sha256), the bytes said to be spliced are the bytes the
/// seam saw splice(2) move, and every ending (FIN, RST, a dead or stalled destination, cancellation, refused
/// pipes) leaves the connections and the pipes as they should be.
/// </summary>
public class SpliceForwardingTests
{
    private const int StreamSize = 64 * 1024 * 1024;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private sealed class Upstream : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);

        public Upstream() => _listener.Start(backlog: 4096);

        public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndpoint;

        public Task<Socket> AcceptAsync() => _listener.AcceptSocketAsync().WaitAsync(Wait);

        public void Dispose() => _listener.Stop();
    }

    /// <summary>A client connected through the proxy, and the upstream's end of its forwarded connection.</summary>
    private static async Task<(Socket Client, Socket Server)> ConnectAsync(ForwardingProxy proxy, Upstream upstream)
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        return (client, await upstream.AcceptAsync());
    }

    private static ForwardOptions Splicing(ForwardSpliceMode mode = ForwardSpliceMode.Always) => new() { SpliceMode = mode };

    /// <summary>
    /// Both sides send everything while reading; the server closes once it has read the whole upload (Kestrel's
    /// socket transport has no half-close, so the test needs none).
    /// </summary>
    private static async Task ExchangeBothWaysAsync(Socket client, Socket server, int size)
    {
        byte[] up = RandomNumberGenerator.GetBytes(size);
        byte[] down = RandomNumberGenerator.GetBytes(size);
        Task<byte[]> serverReads = LoopbackSockets.ReadExactlyAsync(server, size);
        Task serverWrites = server.SendAsync(down);
        Task<byte[]> clientReads = LoopbackSockets.ReadToEndAsync(client);
        await client.SendAsync(up).WaitAsync(Wait);
        Assert.Equal(SHA256.HashData(up), SHA256.HashData(await serverReads.WaitAsync(Wait)));
        await serverWrites.WaitAsync(Wait);
        server.Shutdown(SocketShutdown.Both);
        server.Close();
        Assert.Equal(SHA256.HashData(down), SHA256.HashData(await clientReads.WaitAsync(Wait)));
        client.Close();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task SixtyFourMegabytesBothWaysAtOnceAreExactAndSplicedAsTheSeamSaw(bool useSplice)
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(useSplice, upstream.EndPoint, useSplice ? seam : null);
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        using (server)
        {
            await ExchangeBothWaysAsync(client, server, StreamSize);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(StreamSize, result.Outbound.Bytes);
        Assert.Equal(StreamSize, result.Inbound.Bytes);
        Assert.Equal(ForwardEnd.Fin, result.Inbound.End);
        if (!useSplice)
        {
            Assert.Equal(0, result.Outbound.SplicedBytes + result.Inbound.SplicedBytes);
            Assert.Equal(ForwardFallbackReasons.OtherTransport, result.Outbound.FallbackReason);
            return;
        }
        var (clientLog, upstreamLog) = await proxy.Sockets;
        // splice-auto copies the first reads, then splices the stream: the spliced bytes are what splice(2) wrote.
        Assert.Equal(upstreamLog.SplicedOutBytes, result.Outbound.SplicedBytes);
        Assert.Equal(clientLog.SplicedOutBytes, result.Inbound.SplicedBytes);
        Assert.InRange(result.Outbound.SplicedBytes, StreamSize * 9L / 10, StreamSize);
        Assert.InRange(result.Inbound.SplicedBytes, StreamSize * 9L / 10, StreamSize);
        Assert.Null(result.Outbound.FallbackReason);
        Assert.Null(result.Inbound.FallbackReason);
        await proxy.Metrics.AssertEventuallyAsync(result.Outbound.SplicedBytes + result.Inbound.SplicedBytes,
            m => m.Total(SpliceMetrics.ForwardedBytesName, SpliceMetrics.ForwardModeTag, SpliceMetrics.ForwardModeSplice));
    }

    [Fact]
    public async Task ShortSplicesAreNotTakenForAnEmptySocketByAPeerWaitingForItsReply()
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls { MaxSpliceBytes = 4096 };
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, options: Splicing());
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        using (server)
        {
            // Each side sends a message and waits for the whole answer: a forwarder that took a short splice for
            // "the socket is empty" would wait for an edge while the rest sits unread, and the round would hang.
            for (int round = 0; round < 8; round++)
            {
                byte[] request = RandomNumberGenerator.GetBytes(256 * 1024);
                await client.SendAsync(request);
                Assert.Equal(SHA256.HashData(request), SHA256.HashData(await LoopbackSockets.ReadExactlyAsync(server, request.Length).WaitAsync(Wait)));
                byte[] reply = RandomNumberGenerator.GetBytes(256 * 1024);
                await server.SendAsync(reply);
                Assert.Equal(SHA256.HashData(reply), SHA256.HashData(await LoopbackSockets.ReadExactlyAsync(client, reply.Length).WaitAsync(Wait)));
            }
            client.Shutdown(SocketShutdown.Send);
            Assert.Empty(await LoopbackSockets.ReadToEndAsync(server).WaitAsync(Wait));
            server.Shutdown(SocketShutdown.Send);
            Assert.Empty(await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait));
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        var (clientLog, upstreamLog) = await proxy.Sockets;
        Assert.True(seam.ShortenedSplices > 0);
        Assert.Equal(8 * 256 * 1024, result.Outbound.Bytes);
        Assert.Equal(upstreamLog.SplicedOutBytes, result.Outbound.SplicedBytes);
        Assert.Equal(clientLog.SplicedOutBytes, result.Inbound.SplicedBytes);
        // Only what the transport had received before the takeover (at most the first request) is copied.
        Assert.InRange(result.Outbound.CopiedBytes, 0, 256 * 1024);
        Assert.Equal(result.Inbound.Bytes, result.Inbound.SplicedBytes);
        Assert.Equal(ForwardEnd.Fin, result.Outbound.End);
        Assert.Equal(ForwardEnd.Fin, result.Inbound.End);
    }

    [Fact]
    public async Task APingPongOfSmallMessagesIsCopiedWithoutAPipe()
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam);
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        using (server)
        {
            for (int i = 0; i < 200; i++)
            {
                byte[] ping = RandomNumberGenerator.GetBytes(100);
                await client.SendAsync(ping);
                Assert.Equal(ping, await LoopbackSockets.ReadExactlyAsync(server, 100).WaitAsync(Wait));
                await server.SendAsync(ping);
                Assert.Equal(ping, await LoopbackSockets.ReadExactlyAsync(client, 100).WaitAsync(Wait));
            }
            client.Shutdown(SocketShutdown.Send);
            await LoopbackSockets.ReadToEndAsync(server).WaitAsync(Wait);
            server.Shutdown(SocketShutdown.Send);
            await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(200 * 100, result.Outbound.Bytes);
        Assert.Equal(200 * 100, result.Inbound.Bytes);
        Assert.Equal(0, result.Outbound.SplicedBytes + result.Inbound.SplicedBytes);
        Assert.Null(result.Outbound.FallbackReason); // Copying an exchange is splice-auto's choice, not a fallback.
        Assert.Equal(0, seam.PipesCreated);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AHalfCloseEitherWayIsAFinAndTheOtherDirectionGoesOn(bool clientClosesFirst)
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam);
        var (client, server) = await ConnectAsync(proxy, upstream);
        var (clientLog, upstreamLog) = await proxy.Sockets;
        (Socket first, Socket second) = clientClosesFirst ? (client, server) : (server, client);
        FaultInjectingSyscalls.SocketLog secondsProxySide = clientClosesFirst ? upstreamLog : clientLog;
        byte[] request = RandomNumberGenerator.GetBytes(100_000);
        byte[] answer = RandomNumberGenerator.GetBytes(4 * 1024 * 1024);
        using (client)
        using (server)
        {
            await first.SendAsync(request);
            first.Shutdown(SocketShutdown.Send);
            // The FIN came through (shutdown(SHUT_WR) on the proxy's socket to the other side), and only then the answer.
            Assert.Equal(SHA256.HashData(request), SHA256.HashData(await LoopbackSockets.ReadToEndAsync(second).WaitAsync(Wait)));
            Assert.Equal(1, secondsProxySide.ShutdownWriteCalls);
            await second.SendAsync(answer);
            second.Shutdown(SocketShutdown.Send);
            Assert.Equal(SHA256.HashData(answer), SHA256.HashData(await LoopbackSockets.ReadToEndAsync(first).WaitAsync(Wait)));
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(ForwardEnd.Fin, result.Outbound.End);
        Assert.Equal(ForwardEnd.Fin, result.Inbound.End);
        Assert.Equal(answer.Length, (clientClosesFirst ? result.Inbound : result.Outbound).Bytes);
        Assert.True((clientClosesFirst ? result.Inbound : result.Outbound).SplicedBytes > 0);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AResetEitherWayIsAReset(bool upstreamResets)
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam);
        var (client, server) = await ConnectAsync(proxy, upstream);
        var (clientLog, upstreamLog) = await proxy.Sockets;
        (Socket resetting, Socket other) = upstreamResets ? (server, client) : (client, server);
        using (client)
        using (server)
        {
            // A stream first, so that the reset meets a splicing direction.
            byte[] stream = RandomNumberGenerator.GetBytes(1024 * 1024);
            await resetting.SendAsync(stream);
            Assert.Equal(SHA256.HashData(stream), SHA256.HashData(await LoopbackSockets.ReadExactlyAsync(other, stream.Length).WaitAsync(Wait)));
            resetting.LingerState = new LingerOption(true, 0);
            resetting.Close(); // RST

            var error = await Assert.ThrowsAsync<SocketException>(() => LoopbackSockets.ReadToEndAsync(other).WaitAsync(Wait));
            Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(ForwardEnd.Reset, (upstreamResets ? result.Inbound : result.Outbound).End);
        Assert.Equal(1, (upstreamResets ? clientLog : upstreamLog).ResetOnCloseCalls);
    }

    [Fact]
    public async Task AnUpstreamThatClosesAtOnceEndsTheClientAndDropsWhatFollows()
    {
        using var upstream = new Upstream();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, new FaultInjectingSyscalls(), options: Splicing());
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        {
            server.Close(); // A FIN, having read nothing; what arrives after it is answered with a reset.
            Assert.Empty(await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait));
            // More than any socket buffer holds: the proxy's sends must meet the upstream's reset.
            _ = client.SendAsync(new byte[32 * 1024 * 1024]).ContinueWith(static t => t.Exception, TaskScheduler.Default);
            ForwardResult result = await proxy.Result.WaitAsync(Wait);
            Assert.Equal(ForwardEnd.Fin, result.Inbound.End);
            Assert.Equal(ForwardEnd.DestinationClosed, result.Outbound.End);
        }
    }

    [Fact]
    public async Task ADestinationThatStopsReadingPausesTheSourceWithOnePipeLoadInFlight()
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, options: Splicing());
        var (client, server) = await ConnectAsync(proxy, upstream);
        var (clientLog, upstreamLog) = await proxy.Sockets;
        byte[] payload = RandomNumberGenerator.GetBytes(StreamSize);
        using (client)
        using (server)
        {
            Task sending = client.SendAsync(payload);
            // The upstream reads nothing: splicing goes on until the kernel buffers are full, then stops.
            long spliced = await SettledAsync(() => clientLog.SplicedInBytes);
            Assert.False(sending.IsCompleted, "The client could send everything although the upstream read nothing.");
            Assert.InRange(spliced - upstreamLog.SplicedOutBytes, 0, Math.Min(PipePool.DefaultPipeSize, PipeLimits.MaxSize));
            Assert.True(spliced < StreamSize / 2, $"{spliced} bytes were taken off the client while the upstream read nothing.");

            Task<byte[]> reading = LoopbackSockets.ReadExactlyAsync(server, StreamSize);
            await sending.WaitAsync(Wait);
            Assert.Equal(SHA256.HashData(payload), SHA256.HashData(await reading.WaitAsync(Wait)));
        }
    }

    /// <summary>A count once it has stopped changing for half a second (the kernel buffers are full).</summary>
    private static async Task<long> SettledAsync(Func<long> read)
    {
        long last = -1;
        DateTime deadline = DateTime.UtcNow + Wait;
        while (DateTime.UtcNow < deadline)
        {
            long now = read();
            if (now == last && now > 0)
            {
                return now;
            }
            last = now;
            await Task.Delay(500);
        }
        throw new TimeoutException($"The count kept changing (last {last}).");
    }

    [Fact]
    public async Task TwoThousandIdleForwardedPairsHoldNoPipeButThePooledOnes()
    {
        const int pairs = 2000;
        const int burst = 2 * ForwardingDirection.CopyBufferSize; // Fills the copy buffer: every direction splices.
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam);
        var clients = new List<Socket>();
        var servers = new List<Socket>();
        try
        {
            for (int batch = 0; batch < pairs; batch += 100)
            {
                var connecting = Enumerable.Range(0, 100).Select(async _ =>
                {
                    var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    await client.ConnectAsync(proxy.EndPoint);
                    return client;
                }).ToList();
                clients.AddRange(await Task.WhenAll(connecting).WaitAsync(Wait));
                for (int i = 0; i < 100; i++)
                {
                    servers.Add(await upstream.AcceptAsync());
                }
            }
            byte[] bytes = RandomNumberGenerator.GetBytes(burst);
            await Task.WhenAll(clients.Select(client => client.SendAsync(bytes))).WaitAsync(Wait);
            await Task.WhenAll(servers.Select(server => LoopbackSockets.ReadExactlyAsync(server, burst))).WaitAsync(Wait);
            Assert.True(seam.PipesCreated > 0, "No direction spliced.");

            // Every direction is idle now, waiting for its source with no pipe: only the pool's idle ones are open.
            await proxy.Metrics.AssertEventuallyAsync(0, m => m.Total(SpliceMetrics.PipeCountName, SpliceMetrics.PipeStateTag, SpliceMetrics.PipeStateUsed));
            Assert.InRange(seam.OpenPipes(), 0, PipePool.DefaultMaxPooled);
        }
        finally
        {
            foreach (Socket socket in clients.Concat(servers))
            {
                socket.Dispose();
            }
        }
    }

    [Fact]
    public async Task AnAbortOfOneConnectionEndsBothDirectionsWhateverEdgeTheyWaitOn()
    {
        // The client neither sends nor reads: the outbound direction waits on the client's readable edge, the
        // inbound one (full client buffers) on the client's writable edge. Aborting the upstream cancels only the
        // upstream's edges; both directions must still wake and end.
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        var abortUpstream = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, forward: async (client, server) =>
        {
            Task<ForwardResult> forwarding = client.ForwardAsync(server, Splicing());
            await abortUpstream.Task;
            server.Abort(new ConnectionAbortedException("The test aborts the upstream."));
            return await forwarding;
        });
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        using (server)
        {
            var (_, upstreamLog) = await proxy.Sockets;
            _ = server.SendAsync(new byte[StreamSize]).ContinueWith(static t => t.Exception, TaskScheduler.Default);
            await SettledAsync(() => upstreamLog.SplicedInBytes);
            abortUpstream.SetResult();

            ForwardResult result = await proxy.Result.WaitAsync(Wait);
            Assert.Equal(ForwardEnd.DestinationClosed, result.Outbound.End);
            Assert.Equal(ForwardEnd.Reset, result.Inbound.End);
            var error = await Assert.ThrowsAsync<SocketException>(() => LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait));
            Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        }
    }

    [Theory]
    [InlineData("pipe2", Errno.EMFILE, PipeRefusalReasons.DescriptorLimit)]
    [InlineData("fcntl", Errno.EPERM, PipeRefusalReasons.PipeSizeLimit)]
    public async Task RefusedPipesAreCopiedCountedAndExact(string failing, int errno, string reason)
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls
        {
            CreatePipeErrno = failing == "pipe2" ? errno : null,
            SetPipeSizeErrno = failing == "fcntl" ? errno : null,
        };
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, options: Splicing());
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        using (server)
        {
            await ExchangeBothWaysAsync(client, server, 8 * 1024 * 1024);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(0, result.Outbound.SplicedBytes + result.Inbound.SplicedBytes);
        Assert.Equal(reason, result.Outbound.FallbackReason);
        Assert.Equal(reason, result.Inbound.FallbackReason);
        Assert.True(proxy.Metrics.Total(SpliceMetrics.PipeRefusedName, SpliceMetrics.PipeRefusedReasonTag, reason) >= 2);
        Assert.Equal(2, proxy.Metrics.Total(SpliceMetrics.ForwardFallbacksName, SpliceMetrics.ForwardFallbackReasonTag, reason));
    }

    [Fact]
    public async Task EinvalFromTheFirstSpliceCopiesForGood()
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls { SpliceFault = (socket, socketIsSource) => socketIsSource ? SyscallResult.Failure(Errno.EINVAL) : null };
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, options: Splicing());
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        using (server)
        {
            await ExchangeBothWaysAsync(client, server, 8 * 1024 * 1024);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(8 * 1024 * 1024, result.Outbound.Bytes);
        Assert.Equal(0, result.Outbound.SplicedBytes + result.Inbound.SplicedBytes);
        Assert.Equal(ForwardFallbackReasons.SpliceUnsupported, result.Outbound.FallbackReason);
        Assert.Equal(ForwardFallbackReasons.SpliceUnsupported, result.Inbound.FallbackReason);
    }

    [Fact]
    public async Task ACancelledForwardLosesNothingAndForwardingAgainDeliversEveryByte()
    {
        using var upstream = new Upstream();
        var cancelled = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, forward: async (client, server) =>
        {
            FaultInjectingSyscalls.SocketLog clientLog = seam.For(client.Features.Get<ISocketHandoffFeature>()!.Socket);
            using var cancel = new CancellationTokenSource();
            Task<ForwardResult> first = client.ForwardAsync(server, Splicing(), cancel.Token);
            // Cancel mid-stream, with the upstream not reading: bytes are in the pipe, the buffers, everywhere.
            await SettledAsync(() => clientLog.SplicedInBytes);
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
            cancelled.TrySetResult(clientLog.SplicedInBytes);
            return await client.ForwardAsync(server, Splicing(), CancellationToken.None);
        });
        var (client, server) = await ConnectAsync(proxy, upstream);
        byte[] payload = RandomNumberGenerator.GetBytes(32 * 1024 * 1024);
        using (client)
        using (server)
        {
            Task sending = client.SendAsync(payload);
            Assert.True(await cancelled.Task.WaitAsync(Wait) > 0);
            Task<byte[]> reading = LoopbackSockets.ReadToEndAsync(server);
            await sending.WaitAsync(Wait);
            client.Shutdown(SocketShutdown.Send);
            Assert.Equal(SHA256.HashData(payload), SHA256.HashData(await reading.WaitAsync(Wait)));
            server.Shutdown(SocketShutdown.Send);
            Assert.Empty(await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait));
        }
        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(ForwardEnd.Fin, result.Outbound.End);
    }

    [Fact]
    public async Task AnAbortMidStreamLeavesNoPipeOpenAndNoneInUse()
    {
        using var upstream = new Upstream();
        var seam = new FaultInjectingSyscalls();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, configureTransport: o => o.MaxIdlePipes = 0, options: Splicing());
        var (client, server) = await ConnectAsync(proxy, upstream);
        using (client)
        using (server)
        {
            Task sending = client.SendAsync(new byte[StreamSize]);
            await LoopbackSockets.ReadExactlyAsync(server, 1024 * 1024).WaitAsync(Wait);
            server.LingerState = new LingerOption(true, 0);
            server.Close(); // RST while the outbound direction holds a pipe with bytes in it.
            await Assert.ThrowsAnyAsync<SocketException>(() => sending.WaitAsync(Wait));
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.True(seam.PipesCreated > 0);
        await proxy.Metrics.AssertEventuallyAsync(0, m => m.Total(SpliceMetrics.PipeCountName, SpliceMetrics.PipeStateTag, SpliceMetrics.PipeStateUsed));
        Assert.Equal(0, seam.OpenPipes());
        Assert.NotEqual(ForwardEnd.Fin, result.Outbound.End);
        // Both sockets of the pair are closed: the client's and the upstream's.
        await proxy.Metrics.AssertEventuallyAsync(0, m => m.ActiveConnections);
    }

    [Fact]
    public async Task ACaptureHoldsExactlyTheBytesOfEachDirection()
    {
        using var upstream = new Upstream();
        using var directory = new TempDirectory();
        var options = new ForwardOptions { OutboundCapturePath = directory.File("c2s"), InboundCapturePath = directory.File("s2c") };
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, new FaultInjectingSyscalls(), options: options);
        var (client, server) = await ConnectAsync(proxy, upstream);
        byte[] up = RandomNumberGenerator.GetBytes(16 * 1024 * 1024);
        byte[] down = RandomNumberGenerator.GetBytes(16 * 1024 * 1024 + 7);
        using (client)
        using (server)
        {
            Task<byte[]> serverReads = LoopbackSockets.ReadToEndAsync(server);
            Task<byte[]> clientReads = LoopbackSockets.ReadToEndAsync(client);
            await Task.WhenAll(client.SendAsync(up), server.SendAsync(down)).WaitAsync(Wait);
            client.Shutdown(SocketShutdown.Send);
            server.Shutdown(SocketShutdown.Send);
            Assert.Equal(SHA256.HashData(up), SHA256.HashData(await serverReads.WaitAsync(Wait)));
            Assert.Equal(SHA256.HashData(down), SHA256.HashData(await clientReads.WaitAsync(Wait)));
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(up.Length, result.Outbound.CapturedBytes + result.Outbound.CaptureDroppedBytes);
        Assert.Equal(down.Length, result.Inbound.CapturedBytes + result.Inbound.CaptureDroppedBytes);
        AssertCaptureMatches(up, options.OutboundCapturePath!, result.Outbound);
        AssertCaptureMatches(down, options.InboundCapturePath!, result.Inbound);
        // How much a capture keeps depends on the disk thread keeping up (under the whole suite's load it may drop
        // most of a 16 MiB burst), so only what holds on any machine is asserted: the first tee into the empty
        // capture pipe always succeeds, so each direction captured something, and every captured range is exact.
        Assert.True(result.Outbound.CapturedBytes > 0 && result.Inbound.CapturedBytes > 0);
        Assert.True(result.Outbound.SplicedBytes > 0 && result.Inbound.SplicedBytes > 0);
    }

    [Fact]
    public async Task ACaptureThatCannotKeepUpDropsCountsAndListsTheGapsWhileTheForwardIsExact()
    {
        using var upstream = new Upstream();
        using var directory = new TempDirectory();
        // Every other tee finds the capture pipe full.
        var seam = new FaultInjectingSyscalls { TeeFault = call => call % 2 == 0 ? SyscallResult.Failure(Errno.EAGAIN) : null };
        var options = new ForwardOptions { OutboundCapturePath = directory.File("c2s"), InboundCapturePath = directory.File("s2c") };
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, options: options);
        var (client, server) = await ConnectAsync(proxy, upstream);
        byte[] up = RandomNumberGenerator.GetBytes(16 * 1024 * 1024);
        using (client)
        using (server)
        {
            Task<byte[]> serverReads = LoopbackSockets.ReadToEndAsync(server);
            await client.SendAsync(up).WaitAsync(Wait);
            client.Shutdown(SocketShutdown.Send);
            Assert.Equal(SHA256.HashData(up), SHA256.HashData(await serverReads.WaitAsync(Wait)));
            server.Shutdown(SocketShutdown.Send);
            await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(up.Length, result.Outbound.Bytes);
        Assert.Equal(up.Length, result.Outbound.CapturedBytes + result.Outbound.CaptureDroppedBytes);
        Assert.True(result.Outbound.CaptureDroppedBytes > 0);
        Assert.True(File.Exists(options.OutboundCapturePath + CaptureWriter.GapsSuffix));
        AssertCaptureMatches(up, options.OutboundCapturePath!, result.Outbound);
        Assert.Equal(result.Outbound.CaptureDroppedBytes + result.Inbound.CaptureDroppedBytes,
            proxy.Metrics.Total(SpliceMetrics.CaptureDroppedName));
    }

    [Fact]
    public async Task ABlockedCaptureNeverHoldsTheForwardBack()
    {
        using var upstream = new Upstream();
        using var directory = new TempDirectory();
        using var release = new ManualResetEventSlim();
        // The capture's disk writes (a splice with no socket: pipe → file) block until the forward has delivered everything.
        var seam = new FaultInjectingSyscalls { SpliceFault = (socket, _) => socket is null && !release.Wait(Wait) ? SyscallResult.Failure(Errno.ENOSPC) : null };
        var options = new ForwardOptions { SpliceMode = ForwardSpliceMode.Always, OutboundCapturePath = directory.File("c2s") };
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, seam, options: options);
        var (client, server) = await ConnectAsync(proxy, upstream);
        byte[] up = RandomNumberGenerator.GetBytes(StreamSize);
        using (client)
        using (server)
        {
            Task<byte[]> serverReads = LoopbackSockets.ReadToEndAsync(server);
            await client.SendAsync(up).WaitAsync(Wait);
            client.Shutdown(SocketShutdown.Send);
            // Every byte arrived while the capture could write none.
            Assert.Equal(SHA256.HashData(up), SHA256.HashData(await serverReads.WaitAsync(Wait)));
            Assert.False(proxy.Result.IsCompleted);
            release.Set();
            server.Shutdown(SocketShutdown.Send);
            await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(up.Length, result.Outbound.CapturedBytes + result.Outbound.CaptureDroppedBytes);
        Assert.True(result.Outbound.CaptureDroppedBytes > up.Length / 2, $"{result.Outbound.CaptureDroppedBytes} dropped of {up.Length}.");
        AssertCaptureMatches(up, options.OutboundCapturePath!, result.Outbound);
    }

    /// <summary>
    /// The capture file, read with its gap list, equals <paramref name="stream"/> everywhere it has bytes: each
    /// captured range is the stream's bytes at that offset.
    /// </summary>
    private static void AssertCaptureMatches(byte[] stream, string path, ForwardDirectionResult result)
    {
        byte[] captured = File.ReadAllBytes(path);
        Assert.Equal(result.CapturedBytes, captured.LongLength);
        string gapsPath = path + CaptureWriter.GapsSuffix;
        var gaps = File.Exists(gapsPath)
            ? File.ReadAllLines(gapsPath).Select(line => line.Split(' ')).Select(parts => (Offset: long.Parse(parts[0]), Length: long.Parse(parts[1]))).ToList()
            : [];
        Assert.Equal(result.CaptureDroppedBytes, gaps.Sum(gap => gap.Length));
        long streamOffset = 0;
        long fileOffset = 0;
        foreach (var (offset, length) in gaps.Append((Offset: (long)stream.Length, Length: 0L)))
        {
            Assert.True(offset >= streamOffset, $"Gap at {offset} overlaps the one before.");
            long kept = offset - streamOffset;
            Assert.True(captured.AsSpan((int)fileOffset, (int)kept).SequenceEqual(stream.AsSpan((int)streamOffset, (int)kept)),
                $"Captured bytes at stream offset {streamOffset} ({kept} bytes) differ from the stream.");
            fileOffset += kept;
            streamOffset = offset + length;
        }
        Assert.Equal(captured.LongLength, fileOffset);
    }

    [Fact]
    public async Task ATlsClientIsCopiedAndSaysSo()
    {
        using var upstream = new Upstream();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, upstream.EndPoint, new FaultInjectingSyscalls(), options: Splicing(),
            configureListen: listen => listen.UseHttps(TestCertificates.Localhost));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        await using var tls = new SslStream(new NetworkStream(client, ownsSocket: false), false, (_, _, _, _) => true);
        await tls.AuthenticateAsClientAsync("localhost").WaitAsync(Wait);
        using Socket server = await upstream.AcceptAsync();
        byte[] up = RandomNumberGenerator.GetBytes(4 * 1024 * 1024);
        byte[] down = RandomNumberGenerator.GetBytes(4 * 1024 * 1024);
        Task<byte[]> serverReads = LoopbackSockets.ReadExactlyAsync(server, up.Length);
        Task serverWrites = server.SendAsync(down);
        byte[] received = new byte[down.Length];
        Task clientReads = tls.ReadExactlyAsync(received).AsTask();
        await tls.WriteAsync(up).AsTask().WaitAsync(Wait);
        // Plain bytes reach the upstream: what the proxy forwards is TLS's output, not the socket's.
        Assert.Equal(SHA256.HashData(up), SHA256.HashData(await serverReads.WaitAsync(Wait)));
        await serverWrites.WaitAsync(Wait);
        await clientReads.WaitAsync(Wait);
        Assert.Equal(SHA256.HashData(down), SHA256.HashData(received));
        server.Shutdown(SocketShutdown.Both);
        server.Close();
        client.Shutdown(SocketShutdown.Both); // Kestrel's HTTPS layer does not turn a completed output into a FIN: the client ends it.

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(ForwardFallbackReasons.Tls, result.Outbound.FallbackReason);
        Assert.Equal(0, result.Outbound.SplicedBytes + result.Inbound.SplicedBytes);
        Assert.Equal(1, proxy.Metrics.Total(SpliceMetrics.ForwardFallbacksName, SpliceMetrics.ForwardFallbackReasonTag, ForwardFallbackReasons.Tls) / 2);
    }

    [Fact]
    public async Task ConnectionsOnDifferentLoopsAreCopiedAndSaySo()
    {
        using var paired = new Upstream(); // Where the proxy's paired connection goes, unused.
        using var upstream = new Upstream();
        SpliceConnectionFactory? factory = null;
        var forwarded = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(true, paired.EndPoint, configureTransport: o => o.ThreadCount = 2, forward: async (client, _) =>
        {
            int clientLoop = client.Features.Get<ISpliceConnectionFeature>()!.EventLoopIndex;
            // The factory takes the loops in turn: one of two connections lands on the other loop.
            for (int attempt = 0; attempt < 2; attempt++)
            {
                ConnectionContext server = await factory!.ConnectAsync(upstream.EndPoint);
                await using (server)
                {
                    if (server.Features.Get<ISpliceConnectionFeature>()!.EventLoopIndex != clientLoop)
                    {
                        forwarded.TrySetResult(((IPEndPoint)server.LocalEndPoint!).Port);
                        return await client.ForwardAsync(server);
                    }
                }
            }
            throw new InvalidOperationException("Two connections in a row landed on the client's loop.");
        });
        factory = proxy.Services.GetRequiredService<SpliceConnectionFactory>();

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        using Socket unused = await paired.AcceptAsync();
        int port = await forwarded.Task.WaitAsync(Wait);
        Socket server;
        while (((IPEndPoint)(server = await upstream.AcceptAsync()).RemoteEndPoint!).Port != port)
        {
            server.Dispose();
        }
        using (server)
        {
            await ExchangeBothWaysAsync(client, server, 4 * 1024 * 1024);
        }

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(ForwardFallbackReasons.DifferentLoops, result.Outbound.FallbackReason);
        Assert.Equal(ForwardFallbackReasons.DifferentLoops, result.Inbound.FallbackReason);
        Assert.Equal(0, result.Outbound.SplicedBytes + result.Inbound.SplicedBytes);
        Assert.Equal(4 * 1024 * 1024, result.Outbound.Bytes);
    }

    private sealed class TempDirectory : IDisposable
    {
        public TempDirectory() => Directory.CreateDirectory(PathName);

        public string PathName { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "splice-forward-" + Guid.NewGuid().ToString("N"));

        public string File(string name) => System.IO.Path.Combine(PathName, name);

        public void Dispose() => Directory.Delete(PathName, recursive: true);
    }
}
