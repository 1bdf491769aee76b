using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Connections;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// ForwardAsync between an inbound connection (Kestrel connection middleware) and an upstream one, with a real
/// client and a real upstream server on loopback: every byte both ways (sha256), half-close, reset, cancellation,
/// and bytes received before forwarding began. On SpliceTransport (upstream from SpliceConnectionFactory, on the
/// inbound connection's loop) and on Kestrel's socket transport (upstream from SocketConnectionContextFactory).
/// </summary>
public class ForwardingTests
{
    private const int TransferSize = 8 * 1024 * 1024;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task EveryByteCrossesBothWaysAtOnce(bool useSplice)
    {
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(useSplice, (IPEndPoint)upstream.LocalEndpoint);
        byte[] up = RandomNumberGenerator.GetBytes(TransferSize);
        byte[] down = RandomNumberGenerator.GetBytes(TransferSize);

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        using Socket server = await upstream.AcceptSocketAsync().WaitAsync(Wait);
        // Both sides send everything while reading: only a forwarder that moves both directions at once, with
        // back-pressure that stops neither, gets through. The server closes once it has read the whole upload,
        // so the test needs no half-close (Kestrel's socket transport has none).
        Task<byte[]> serverReads = LoopbackSockets.ReadExactlyAsync(server, TransferSize);
        Task serverWrites = server.SendAsync(down);
        Task<byte[]> clientReads = LoopbackSockets.ReadToEndAsync(client);
        await client.SendAsync(up).WaitAsync(Wait);

        Assert.Equal(SHA256.HashData(up), SHA256.HashData(await serverReads.WaitAsync(Wait)));
        await serverWrites.WaitAsync(Wait);
        server.Shutdown(SocketShutdown.Both);
        server.Close();
        Assert.Equal(SHA256.HashData(down), SHA256.HashData(await clientReads.WaitAsync(Wait)));
        client.Close();

        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(TransferSize, result.Outbound.Bytes);
        Assert.Equal(TransferSize, result.Inbound.Bytes);
        if (useSplice)
        {
            // Streams both ways: splice-auto splices all but the first reads.
            Assert.InRange(result.Outbound.SplicedBytes, TransferSize / 2, TransferSize);
            Assert.InRange(result.Inbound.SplicedBytes, TransferSize / 2, TransferSize);
            Assert.Null(result.Outbound.FallbackReason);
        }
        else
        {
            Assert.Equal(0, result.Inbound.SplicedBytes);
            Assert.Equal("other_transport", result.Inbound.FallbackReason);
        }
        Assert.Equal(ForwardEnd.Fin, result.Inbound.End);
    }

    [Fact]
    public async Task AHalfCloseIsForwardedAndTheOtherDirectionGoesOn()
    {
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        await using ForwardingProxy proxy = await ForwardingProxy.StartAsync(useSplice: true, (IPEndPoint)upstream.LocalEndpoint);
        byte[] answer = RandomNumberGenerator.GetBytes(1024 * 1024);

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(proxy.EndPoint);
        using Socket server = await upstream.AcceptSocketAsync().WaitAsync(Wait);
        await client.SendAsync("the whole request"u8.ToArray());
        client.Shutdown(SocketShutdown.Send);

        // The server sees the request end (the FIN came through), and only then answers.
        Assert.Equal("the whole request"u8.ToArray(), await LoopbackSockets.ReadToEndAsync(server).WaitAsync(Wait));
        await server.SendAsync(answer);
        server.Shutdown(SocketShutdown.Send);

        Assert.Equal(SHA256.HashData(answer), SHA256.HashData(await LoopbackSockets.ReadToEndAsync(client).WaitAsync(Wait)));
        ForwardResult result = await proxy.Result.WaitAsync(Wait);
        Assert.Equal(ForwardEnd.Fin, result.Outbound.End);
        Assert.Equal(ForwardEnd.Fin, result.Inbound.End);
        Assert.Equal(answer.Length, result.Inbound.Bytes);
    }

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
