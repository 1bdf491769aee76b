using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
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

    /// <summary>A proxy: Kestrel listening on loopback, each connection forwarded to <paramref name="upstream"/>.</summary>
    private sealed class Proxy : IAsyncDisposable
    {
        private readonly SpliceTestHost _host;

        private Proxy(SpliceTestHost host, TaskCompletionSource<ForwardResult> result)
        {
            _host = host;
            Result = result.Task;
        }

        /// <summary>The first forwarded connection's result, or its exception.</summary>
        public Task<ForwardResult> Result { get; }

        public IPEndPoint EndPoint => new(IPAddress.Loopback, _host.Port);

        public static async Task<Proxy> StartAsync(bool useSplice, IPEndPoint upstream, Func<ConnectionContext, ConnectionContext, Task<ForwardResult>>? forward = null, TimeSpan? delayBeforeConnect = null)
        {
            var result = new TaskCompletionSource<ForwardResult>(TaskCreationOptions.RunContinuationsAsynchronously);
            forward ??= static (client, server) => client.ForwardAsync(server);
            SpliceTestHost host = await SpliceTestHost.StartAsync(
                _ => { },
                useSplice: useSplice,
                configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Run(async client =>
                {
                    try
                    {
                        if (delayBeforeConnect is { } delay)
                        {
                            await Task.Delay(delay);
                        }
                        await using ConnectionContext server = await ConnectAsync(kestrel.ApplicationServices, upstream, client);
                        result.TrySetResult(await forward(client, server));
                    }
                    catch (Exception ex)
                    {
                        result.TrySetException(ex);
                    }
                }))));
            return new Proxy(host, result);
        }

        private static async Task<ConnectionContext> ConnectAsync(IServiceProvider services, IPEndPoint upstream, ConnectionContext client)
        {
            if (services.GetService<SpliceConnectionFactory>() is { } splice)
            {
                ConnectionContext server = await splice.ConnectPairedAsync(upstream, client);
                Assert.Equal(client.Features.Get<ISpliceConnectionFeature>()!.EventLoopIndex, server.Features.Get<ISpliceConnectionFeature>()!.EventLoopIndex);
                return server;
            }
            var socket = new Socket(upstream.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(upstream);
            return new SocketConnectionContextFactory(new SocketConnectionFactoryOptions(), NullLogger.Instance).Create(socket);
        }

        public ValueTask DisposeAsync() => _host.DisposeAsync();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task EveryByteCrossesBothWaysAtOnce(bool useSplice)
    {
        using var upstream = new TcpListener(IPAddress.Loopback, 0);
        upstream.Start();
        await using Proxy proxy = await Proxy.StartAsync(useSplice, (IPEndPoint)upstream.LocalEndpoint);
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
        await using Proxy proxy = await Proxy.StartAsync(useSplice: true, (IPEndPoint)upstream.LocalEndpoint);
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
        await using Proxy proxy = await Proxy.StartAsync(useSplice, (IPEndPoint)upstream.LocalEndpoint);

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
        await using Proxy proxy = await Proxy.StartAsync(useSplice: true, (IPEndPoint)upstream.LocalEndpoint, delayBeforeConnect: TimeSpan.FromMilliseconds(200));
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
        await using Proxy proxy = await Proxy.StartAsync(useSplice: true, (IPEndPoint)upstream.LocalEndpoint, forward: static async (client, server) =>
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
