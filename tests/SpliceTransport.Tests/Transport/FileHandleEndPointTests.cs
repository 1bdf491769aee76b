using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// An inherited listening descriptor (systemd socket activation, <c>ListenHandle</c>) is served by our
/// transport, which checks it first and never closes it: like Kestrel, it does not own what it was handed.
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

        await using (var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/", () => "inherited"),
            urls: [],
            configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ListenHandle(handle))))
        {
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
            using var response = await client.GetAsync("/");
            TransportAssert.ServedBySplice(response);
            Assert.Equal("inherited", await response.Content.ReadAsStringAsync());
        }

        // The host is gone and the descriptor is still ours, still the same listening socket: a client's
        // connection is still queued by the kernel on it.
        Assert.Equal(port, ((IPEndPoint)listener.LocalEndPoint!).Port);
        using var late = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await late.ConnectAsync(IPAddress.Loopback, port);
        listener.Blocking = true;
        using Socket accepted = listener.Accept();
        Assert.True(accepted.Connected);
        listener.Dispose();
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
        Assert.Contains($"File handle {handle} is a stream socket that is not listening", error.ToString());
        // Still open: the rejected handle was not closed either.
        unbound.Bind(new IPEndPoint(IPAddress.Loopback, 0));
    }

    [Fact]
    public async Task ADescriptorThatIsNotASocketIsRejectedWithItsNumberAndLeftOpen()
    {
        string path = Path.GetTempFileName();
        try
        {
            using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            ulong handle = (ulong)file.DangerousGetHandle();

            var error = await Assert.ThrowsAnyAsync<Exception>(() => SpliceTestHost.StartAsync(
                app => { },
                urls: [],
                configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ListenHandle(handle))));
            Assert.Contains($"File handle {handle} is not a socket", error.ToString());
            RandomAccess.Write(file, "still open"u8, fileOffset: 0);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task ADatagramSocketIsRejectedWithItsType()
    {
        using var datagram = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        ulong handle = (ulong)datagram.SafeHandle.DangerousGetHandle();

        var error = await Assert.ThrowsAnyAsync<Exception>(() => SpliceTestHost.StartAsync(
            app => { },
            urls: [],
            configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.ListenHandle(handle))));
        Assert.Contains($"File handle {handle} is a socket of type 2, not a stream socket", error.ToString());
    }
}
