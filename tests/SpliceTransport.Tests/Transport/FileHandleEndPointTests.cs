using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// An inherited listening descriptor (systemd socket activation, <c>ListenHandle</c>) is served by our
/// transport, which takes ownership of it as Kestrel's socket transport does.
/// </summary>
public class FileHandleEndPointTests
{
    [Fact]
    public async Task AnInheritedListeningSocketIsServed()
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        ulong handle = (ulong)listener.SafeHandle.DangerousGetHandle();
        // The transport owns the descriptor from here on, as it would one passed by systemd.
        listener.SafeHandle.SetHandleAsInvalid();

        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/", () => "inherited"),
            urls: [],
            configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ListenHandle(handle)));
        using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };

        using var response = await client.GetAsync("/");
        TransportAssert.ServedBySplice(response);
        Assert.Equal("inherited", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task ADescriptorThatIsNotAListeningSocketIsRejectedWithItsNumber()
    {
        using var unbound = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        ulong handle = (ulong)unbound.SafeHandle.DangerousGetHandle();

        var error = await Assert.ThrowsAnyAsync<Exception>(() => SpliceTestHost.StartAsync(
            app => { },
            urls: [],
            configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ListenHandle(handle))));
        Assert.Contains($"File handle {handle} is not a listening stream socket", error.ToString());
    }
}
