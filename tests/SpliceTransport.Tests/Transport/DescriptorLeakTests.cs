using System.Net;
using System.Net.Sockets;
using System.Runtime;
using System.Text;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Tests.Infrastructure;
using Xunit.Abstractions;

namespace SpliceTransport.Tests.Transport;

/// <summary>Ten thousand connections opened and closed leave no descriptor behind.</summary>
[Collection(ProcessWideCollection.Name)]
public class DescriptorLeakTests(ITestOutputHelper output)
{
    private const int ConnectionCount = 10_000;
    private const int BatchSize = 200;

    /// <summary>Descriptors the runtime may open on its own meanwhile (thread-pool, timers, diagnostics).</summary>
    private const int Tolerance = 10;

    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(10);

    /// <summary>What the outbound-connect rounds may allocate with collection suspended: far more than they need.</summary>
    private const long NoGCBudget = 64 * 1024 * 1024;

    private static int OpenDescriptors() => Directory.GetFiles("/proc/self/fd").Length;

    [Fact]
    public async Task TenThousandConnectionsLeaveNoDescriptorBehind()
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/", () => "ok"));
        var endPoint = new IPEndPoint(IPAddress.Loopback, host.Port);
        byte[] request = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");

        // Warm up, so that lazily created descriptors (the runtime's socket engine, …) exist before the baseline.
        await RunBatchAsync(endPoint, request, BatchSize);
        await WaitForNoActiveConnectionsAsync(host);
        int baseline = OpenDescriptors();

        for (int done = 0; done < ConnectionCount; done += BatchSize)
        {
            await RunBatchAsync(endPoint, request, BatchSize);
        }
        await WaitForNoActiveConnectionsAsync(host);

        await Poll.UntilAsync(() => OpenDescriptors() <= baseline + Tolerance, SettleTimeout);
        int after = OpenDescriptors();
        output.WriteLine($"descriptors: baseline {baseline}, after {ConnectionCount} connections {after}");
        Assert.True(after <= baseline + Tolerance, $"{after - baseline} descriptors more than before {ConnectionCount} connections.");
        Assert.Equal(ConnectionCount + BatchSize, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    /// <summary>
    /// Outbound connects that fail every way (refused, given up on mid-handshake, and connected then closed) leave no
    /// descriptor behind: the socket of a connect given up on is closed on its loop, after it is unregistered.
    /// </summary>
    [Fact]
    public async Task FailedAndAbandonedOutboundConnectsLeaveNoDescriptorBehind()
    {
        const int Rounds = 50;
        await using var host = await ConnectionFactoryTests.StartAsync();
        SpliceConnectionFactory factory = ConnectionFactoryTests.FactoryOf(host);
        using var silent = SilentListener.Start();
        using var peer = new TcpListener(IPAddress.Loopback, 0);
        peer.Start();
        var refused = new IPEndPoint(IPAddress.Loopback, ((IPEndPoint)peer.LocalEndpoint).Port);

        async Task RoundAsync()
        {
            // Given up on mid-handshake (a timeout takes the same path, through a linked token).
            using (var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(20)))
            {
                await Assert.ThrowsAnyAsync<OperationCanceledException>(() => factory.ConnectAsync(silent.EndPoint, cancel.Token).AsTask());
            }
            Task<Socket> accepting = peer.AcceptSocketAsync();
            await using (ConnectionContext connection = await factory.ConnectAsync(refused))
            {
                using Socket accepted = await accepting;
            }
        }

        await RoundAsync(); // Warm up: lazily created descriptors exist before the baseline.
        await WaitForNoActiveConnectionsAsync(host);
        int baseline = OpenDescriptors();
        // No collection meanwhile: a leaked socket's handle would be closed by its finalizer, and hide the leak.
        Assert.True(GC.TryStartNoGCRegion(NoGCBudget), "Could not suspend garbage collection.");
        int after;
        try
        {
            for (int i = 0; i < Rounds; i++)
            {
                await RoundAsync();
            }
            peer.Stop();
            for (int i = 0; i < Rounds; i++)
            {
                await Assert.ThrowsAsync<SocketException>(() => factory.ConnectAsync(refused).AsTask());
            }
            await WaitForNoActiveConnectionsAsync(host);

            await Poll.UntilAsync(() => OpenDescriptors() <= baseline + Tolerance, SettleTimeout);
            after = OpenDescriptors();
            Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode); // Still no collection: the count is honest.
        }
        finally
        {
            if (GCSettings.LatencyMode == GCLatencyMode.NoGCRegion)
            {
                GC.EndNoGCRegion();
            }
        }
        output.WriteLine($"descriptors: baseline {baseline}, after {Rounds} rounds of failed and abandoned connects {after}");
        Assert.True(after <= baseline + Tolerance, $"{after - baseline} descriptors more than before the connects.");
        host.Logs.AssertNoErrors();
    }

    /// <summary>Opens <paramref name="count"/> connections at once; each sends one request and reads the response to the server's close.</summary>
    private static async Task RunBatchAsync(IPEndPoint endPoint, byte[] request, int count)
    {
        var tasks = new Task[count];
        for (int i = 0; i < count; i++)
        {
            tasks[i] = OneRequestAsync(endPoint, request);
        }
        await Task.WhenAll(tasks).WaitAsync(RawHttpConnection.Timeout);
    }

    private static async Task OneRequestAsync(IPEndPoint endPoint, byte[] request)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint);
        await socket.SendAsync(request, SocketFlags.None);
        byte[] buffer = new byte[1024];
        var reply = new StringBuilder();
        int n;
        while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None)) > 0)
        {
            reply.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        string text = reply.ToString();
        Assert.StartsWith("HTTP/1.1 200 OK", text);
        Assert.Contains($"{SpliceTestHost.TransportHeader}: splice", text);
    }

    private static async Task WaitForNoActiveConnectionsAsync(SpliceTestHost host)
    {
        await Poll.EventuallyAsync(() => host.Metrics.ActiveConnections == 0, () => $"no connection open ({host.Metrics.ActiveConnections} still are)", SettleTimeout);
    }
}
