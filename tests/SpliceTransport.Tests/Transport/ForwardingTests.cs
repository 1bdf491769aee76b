using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// ForwardAsync between an inbound connection (Kestrel connection middleware) and an upstream one, with a real
/// client and a real upstream server on loopback: reset, cancellation (the 64 MiB exchange both ways on both
/// transports, and half-close each way, are SpliceForwardingTests'),
/// and bytes received before forwarding began. On SpliceTransport (upstream from SpliceConnectionFactory, on the
/// inbound connection's loop) and on Kestrel's socket transport (upstream from SocketConnectionContextFactory).
/// </summary>
public class ForwardingTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AResetUpstreamResetsTheClient(bool useSplice)
    {
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(useSplice, (IPEndPoint)upstream.LocalEndpoint);

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        using Socket server = await upstream.AcceptSocketAsync().WaitAsync(Wait);
        await client.SendAsync("hello"u8.ToArray());
        Assert.Equal("hello"u8.ToArray(), await LoopbackSockets.ReadExactlyAsync(server, 5).WaitAsync(Wait));
        server.LingerState = new LingerOption(true, 0);
        server.Close(); // RST

        var error = await Assert.ThrowsAsync<SocketException>(() => LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(ForwardEnd.Reset, result.Inbound.End);
    }

    [Fact]
    public async Task BytesReceivedBeforeForwardingGoFirst()
    {
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(useSplice: true, (IPEndPoint)upstream.LocalEndpoint, delayBeforeConnect: TimeSpan.FromMilliseconds(200));
        byte[] early = RandomNumberGenerator.GetBytes(256 * 1024);
        byte[] late = RandomNumberGenerator.GetBytes(256 * 1024);

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        await client.SendAsync(early); // Buffered by the transport while the proxy has no upstream yet.
        using Socket server = await upstream.AcceptSocketAsync().WaitAsync(Wait);
        await client.SendAsync(late);
        client.Shutdown(SocketShutdown.Send);

        byte[] received = await LoopbackSockets.ReadToEndAsync(server).WaitAsync(Wait);
        Assert.Equal(SHA256.HashData([.. early, .. late]), SHA256.HashData(received));
    }

    [Fact]
    public async Task ACancelledForwardLeavesBothConnectionsUsable()
    {
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(useSplice: true, (IPEndPoint)upstream.LocalEndpoint, forward: static async (client, server) =>
        {
            using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.ForwardAsync(server, cancel.Token));
            // Nothing was lost or faulted: the app goes on with both connections by hand.
            await client.Transport.Output.WriteAsync("cancelled"u8.ToArray());
            await client.Transport.Output.CompleteAsync();
            return new ForwardResult(default, default);
        });

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        using Socket server = await upstream.AcceptSocketAsync().WaitAsync(Wait);

        Assert.Equal("cancelled"u8.ToArray(), await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait));
        await proxy.Result.WaitAsync(Wait);
    }

    [Fact]
    public async Task AConnectionCannotBeForwardedToItself()
    {
        var connection = new DefaultConnectionContext("self");
        var error = await Assert.ThrowsAsync<ArgumentException>(() => connection.ForwardAsync(connection));
        Assert.Contains("self", error.Message);
    }
}
