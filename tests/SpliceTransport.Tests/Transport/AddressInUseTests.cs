using System.Net;
using System.Net.Sockets;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>A port someone else holds fails start-up exactly as it does with Kestrel's socket transport.</summary>
public class AddressInUseTests
{
    private static Task<SpliceTestHost> StartOnAsync(int port, bool useSplice, Action<SpliceTransportOptions>? configure = null) =>
        SpliceTestHost.StartAsync(app => app.MapGet("/", () => "ok"), configure, urls: [$"http://127.0.0.1:{port}"], useSplice: useSplice);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task APortHeldByAnotherSocketFailsLikeKestrel(int threadCount)
    {
        using var holder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        holder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        holder.Listen();
        int port = ((IPEndPoint)holder.LocalEndPoint!).Port;

        var kestrel = await Assert.ThrowsAsync<IOException>(() => StartOnAsync(port, useSplice: false));
        var splice = await Assert.ThrowsAsync<IOException>(() => StartOnAsync(port, useSplice: true, o => o.ThreadCount = threadCount));

        Assert.Contains("address already in use", splice.Message);
        Assert.Equal(kestrel.Message, splice.Message);
        Assert.Equal(kestrel.InnerException?.GetType(), splice.InnerException?.GetType());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ASecondSpliceHostOnTheSamePortFails(bool reusePort)
    {
        // SO_REUSEPORT lets sockets of the same user share a port. Our loops rely on that among themselves,
        // but a second server (another instance of the same app) must not silently join the first one's port.
        await using var first = await SpliceTestHost.StartAsync(app => app.MapGet("/", () => "first"), o =>
        {
            o.ThreadCount = 2;
            o.ReusePort = reusePort;
        });
        using (var client = first.CreateClient())
        using (var response = await client.GetAsync("/"))
        {
            TransportAssert.ServedBySplice(response);
        }

        var ex = await Assert.ThrowsAsync<IOException>(() => StartOnAsync(first.Port, useSplice: true, o =>
        {
            o.ThreadCount = 2;
            o.ReusePort = true;
        }));
        Assert.Contains("address already in use", ex.Message);

        // And a Kestrel-sockets server cannot take it either.
        await Assert.ThrowsAsync<IOException>(() => StartOnAsync(first.Port, useSplice: false));
    }

    [Fact]
    public async Task AFailedStartReleasesTheEndpointsAlreadyBound()
    {
        using var holder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        holder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        holder.Listen();
        int heldPort = ((IPEndPoint)holder.LocalEndPoint!).Port;
        int freePort;
        using (var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            freePort = ((IPEndPoint)probe.LocalEndPoint!).Port;
        }

        // The first endpoint binds, the second fails: start-up fails and must release the first one's sockets.
        await Assert.ThrowsAsync<IOException>(() => SpliceTestHost.StartAsync(
            app => app.MapGet("/", () => "ok"), o => o.ThreadCount = 2, urls: [$"http://127.0.0.1:{freePort}", $"http://127.0.0.1:{heldPort}"]));

        using var rebind = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        rebind.Bind(new IPEndPoint(IPAddress.Loopback, freePort));
        rebind.Listen();
    }
}
