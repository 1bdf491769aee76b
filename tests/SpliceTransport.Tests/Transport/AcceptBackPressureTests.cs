using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Transport;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// Connections wait for Kestrel in the kernel's backlog, not in the process: the listener holds at most a
/// small, fixed number of accepted connections, and none of them is started (no registration, no pump, no
/// buffer) before Kestrel takes it.
/// </summary>
public class AcceptBackPressureTests
{
    private const int Clients = SpliceConnectionListener.MaxPendingConnections * 3;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task TheListenerHoldsAtMostItsBoundAndStartsNothingBeforeKestrelTakesIt()
    {
        using var factory = CreateFactory();
        var listener = (SpliceConnectionListener)await factory.BindAsync(new IPEndPoint(IPAddress.Loopback, 0));
        int port = ((IPEndPoint)listener.EndPoint).Port;
        var clients = new List<Socket>();
        try
        {
            for (int i = 0; i < Clients; i++)
            {
                var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                await client.ConnectAsync(IPAddress.Loopback, port);
                // Bytes sent before Kestrel takes the connection stay in the kernel until it does.
                await client.SendAsync("GET / HTTP/1.1\r\n\r\n"u8.ToArray());
            }

            await WaitUntilAsync(() => listener.PendingCount == SpliceConnectionListener.MaxPendingConnections);
            await Task.Delay(200); // Give the acceptors every chance to overshoot.
            Assert.Equal(SpliceConnectionListener.MaxPendingConnections, listener.PendingCount);

            var taken = new List<ConnectionContext>();
            for (int i = 0; i < Clients; i++)
            {
                ConnectionContext? connection = await listener.AcceptAsync().AsTask().WaitAsync(Deadline);
                Assert.NotNull(connection);
                taken.Add(connection);
                Assert.True(listener.PendingCount <= SpliceConnectionListener.MaxPendingConnections);
            }

            // Once taken, each is started and reads what its client sent long before.
            foreach (ConnectionContext connection in taken)
            {
                var read = await connection.Transport.Input.ReadAsync().AsTask().WaitAsync(Deadline);
                Assert.Equal(18, read.Buffer.Length);
                connection.Transport.Input.AdvanceTo(read.Buffer.End);
                await connection.DisposeAsync();
            }
        }
        finally
        {
            await listener.UnbindAsync();
            await listener.DisposeAsync();
            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task AConnectionWaitingForKestrelIsNotStarted()
    {
        using var factory = CreateFactory();
        var (listener, client) = await BindWithOneWaitingClientAsync(factory);
        using var _ = client;

        var connection = (SpliceConnection)(await listener.AcceptAsync().AsTask().WaitAsync(Deadline))!;
        // Taken now; Start was scheduled on its loop as AcceptAsync returned it.
        await WaitUntilAsync(() => connection.State == SpliceConnection.ConnectionState.Open);
        await connection.DisposeAsync().AsTask().WaitAsync(Deadline);
        Assert.Equal(SpliceConnection.ConnectionState.Closed, connection.State);
        await listener.UnbindAsync();
    }

    [Fact]
    public async Task UnbindingResetsTheConnectionsKestrelNeverTook()
    {
        using var factory = CreateFactory();
        var (listener, client) = await BindWithOneWaitingClientAsync(factory);
        using var _ = client;

        await listener.UnbindAsync().AsTask().WaitAsync(Deadline);

        var buffer = new byte[1];
        var error = await Assert.ThrowsAsync<SocketException>(async () => await client.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Deadline));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
    }

    /// <summary>A listener with one client connected and accepted, waiting for Kestrel to take it.</summary>
    private static async Task<(SpliceConnectionListener, Socket)> BindWithOneWaitingClientAsync(SpliceConnectionListenerFactory factory)
    {
        var listener = (SpliceConnectionListener)await factory.BindAsync(new IPEndPoint(IPAddress.Loopback, 0));
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.EndPoint).Port);
        await WaitUntilAsync(() => listener.PendingCount == 1);
        return (listener, client);
    }

    private static SpliceConnectionListenerFactory CreateFactory() => new(
        Options.Create(new SpliceTransportOptions { ThreadCount = 2 }),
        NullLoggerFactory.Instance,
        new SpliceMetrics(new TestMeterFactory()),
        []);

    private static Task WaitUntilAsync(Func<bool> condition) => Poll.EventuallyAsync(condition, () => "the condition", Deadline);

    private sealed class TestMeterFactory : System.Diagnostics.Metrics.IMeterFactory
    {
        public System.Diagnostics.Metrics.Meter Create(System.Diagnostics.Metrics.MeterOptions options) => new(options);

        public void Dispose()
        {
        }
    }
}
