using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// Outbound connections (SpliceConnectionFactory, the IConnectionFactory UseSpliceTransport registers), against
/// real peers on loopback: bytes both ways with their sha256, half-close, Unix sockets, the errors of a refused
/// connect, and the pairing of a connection with an inbound one's loop.
/// </summary>
public class ConnectionFactoryTests
{
    private const int TransferSize = 4 * 1024 * 1024;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    internal static Task<SpliceTestHost> StartAsync(Action<SpliceTransportOptions>? options = null) =>
        SpliceTestHost.StartAsync(_ => { }, options);

    internal static SpliceConnectionFactory FactoryOf(SpliceTestHost host) =>
        Assert.IsType<SpliceConnectionFactory>(host.Services.GetRequiredService<IConnectionFactory>());

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("::1")]
    public async Task ATcpConnectionCarriesEveryByteBothWaysAtOnceAndHalfCloses(string address)
    {
        await using SpliceTestHost host = await StartAsync();
        using var peerListener = new TcpListener(IPAddress.Parse(address), 0);
        peerListener.Start();
        var endpoint = (IPEndPoint)peerListener.LocalEndpoint;

        Task<Socket> accepting = peerListener.AcceptSocketAsync();
        ConnectionContext connection = await FactoryOf(host).ConnectAsync(endpoint).AsTask().WaitAsync(Wait);
        await using var _ = connection;
        using Socket peer = await accepting.WaitAsync(Wait);

        Assert.Equal(endpoint, connection.RemoteEndPoint);
        Assert.Equal(peer.RemoteEndPoint, connection.LocalEndPoint);
        Assert.NotNull(connection.Features.Get<ISpliceConnectionFeature>());

        byte[] up = RandomNumberGenerator.GetBytes(TransferSize);
        byte[] down = RandomNumberGenerator.GetBytes(TransferSize);
        // Both directions at once: each side writes all before it reads, which needs both pumps and back-pressure right.
        Task<byte[]> peerReads = LoopbackSockets.ReadToEndAsync(peer);
        Task peerWrites = Task.Run(async () =>
        {
            await peer.SendAsync(down);
            peer.Shutdown(SocketShutdown.Send);
        });
        Task weWrite = Task.Run(async () =>
        {
            await connection.Transport.Output.WriteAsync(up);
            await connection.Transport.Output.CompleteAsync(); // A FIN to the peer; our input stays open.
        });
        byte[] weRead = await LoopbackSockets.ReadToEndAsync(connection.Transport.Input).WaitAsync(Wait);
        await Task.WhenAll(peerWrites, weWrite).WaitAsync(Wait);

        Assert.Equal(SHA256.HashData(down), SHA256.HashData(weRead));
        Assert.Equal(SHA256.HashData(up), SHA256.HashData(await peerReads.WaitAsync(Wait)));
        await host.Metrics.AssertEventuallyAsync(1, m => m.Total("splice.connection.connected"));
    }

    [Fact]
    public async Task AUnixSocketConnectionCarriesEveryByte()
    {
        await using SpliceTestHost host = await StartAsync();
        string path = Path.Combine(Path.GetTempPath(), $"splice-connect-{Guid.NewGuid():N}.sock");
        using var peerListener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        peerListener.Bind(new UnixDomainSocketEndPoint(path));
        peerListener.Listen();
        try
        {
            Task<Socket> accepting = peerListener.AcceptAsync();
            ConnectionContext connection = await FactoryOf(host).ConnectAsync(new UnixDomainSocketEndPoint(path)).AsTask().WaitAsync(Wait);
            await using var _ = connection;
            using Socket peer = await accepting.WaitAsync(Wait);

            byte[] up = RandomNumberGenerator.GetBytes(TransferSize);
            Task<byte[]> peerReads = LoopbackSockets.ReadToEndAsync(peer);
            await connection.Transport.Output.WriteAsync(up);
            await connection.Transport.Output.CompleteAsync();
            Assert.Equal(SHA256.HashData(up), SHA256.HashData(await peerReads.WaitAsync(Wait)));

            await peer.SendAsync("bye"u8.ToArray());
            peer.Shutdown(SocketShutdown.Send);
            Assert.Equal("bye"u8.ToArray(), await LoopbackSockets.ReadToEndAsync(connection.Transport.Input).WaitAsync(Wait));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task ARefusedConnectThrowsASocketExceptionNamingTheEndPoint()
    {
        await using SpliceTestHost host = await StartAsync();
        IPEndPoint closed = LoopbackSockets.ClosedPort();

        var error = await Assert.ThrowsAsync<SocketException>(() => FactoryOf(host).ConnectAsync(closed).AsTask().WaitAsync(Wait));

        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
        Assert.Contains(closed.ToString(), error.Message);
        Assert.Contains("ECONNREFUSED", error.Message);
        Assert.Equal(0, host.Metrics.Total("splice.connection.connected"));
    }

    [Fact]
    public async Task AMissingUnixSocketThrowsAddressNotAvailable()
    {
        await using SpliceTestHost host = await StartAsync();
        var missing = new UnixDomainSocketEndPoint(Path.Combine(Path.GetTempPath(), $"splice-missing-{Guid.NewGuid():N}.sock"));

        var error = await Assert.ThrowsAsync<SocketException>(() => FactoryOf(host).ConnectAsync(missing).AsTask().WaitAsync(Wait));

        Assert.Equal(SocketError.AddressNotAvailable, error.SocketErrorCode);
        Assert.Contains(missing.ToString(), error.Message);
    }

    [Fact]
    public async Task AnEndPointOfAnotherTypeIsNotSupported()
    {
        await using SpliceTestHost host = await StartAsync();

        var error = await Assert.ThrowsAsync<NotSupportedException>(() => FactoryOf(host).ConnectAsync(new FileHandleEndPoint(3, FileHandleType.Tcp)).AsTask());

        Assert.Contains(nameof(FileHandleEndPoint), error.Message);
    }

    [Fact]
    public async Task ADnsEndPointTriesTheResolvedAddresses()
    {
        await using SpliceTestHost host = await StartAsync();
        using var peerListener = new TcpListener(IPAddress.Loopback, 0);
        peerListener.Start();
        int port = ((IPEndPoint)peerListener.LocalEndpoint).Port;

        Task<Socket> accepting = peerListener.AcceptSocketAsync();
        // "localhost" resolves to ::1 first on many systems, where nothing listens: that one is refused, and the next is tried.
        ConnectionContext connection = await FactoryOf(host).ConnectAsync(new DnsEndPoint("localhost", port)).AsTask().WaitAsync(Wait);
        await using var _ = connection;
        using Socket peer = await accepting.WaitAsync(Wait);

        await peer.SendAsync("hello"u8.ToArray());
        peer.Shutdown(SocketShutdown.Send);
        Assert.Equal("hello"u8.ToArray(), await LoopbackSockets.ReadToEndAsync(connection.Transport.Input).WaitAsync(Wait));
    }

    [Fact]
    public async Task APairedConnectionLivesOnTheLoopOfItsPartner()
    {
        await using SpliceTestHost host = await StartAsync(o => o.ThreadCount = 4);
        using var peerListener = new TcpListener(IPAddress.Loopback, 0);
        peerListener.Start();
        var endpoint = (IPEndPoint)peerListener.LocalEndpoint;

        for (int loop = 0; loop < 4; loop++)
        {
            var partner = new DefaultConnectionContext();
            partner.Features.Set<ISpliceConnectionFeature>(new OnLoop(loop));
            Task<Socket> accepting = peerListener.AcceptSocketAsync();
            ConnectionContext connection = await FactoryOf(host).ConnectPairedAsync(endpoint, partner).AsTask().WaitAsync(Wait);
            await using var _ = connection;
            using Socket peer = await accepting.WaitAsync(Wait);

            Assert.Equal(loop, connection.Features.GetRequiredFeature<ISpliceConnectionFeature>().EventLoopIndex);
        }
    }

    [Fact]
    public async Task AnEndPointThatNeverAnswersTimesOutWithTimedOut()
    {
        await using SpliceTestHost host = await StartAsync(o => o.ConnectTimeout = TimeSpan.FromMilliseconds(300));
        using var silent = SilentListener.Start();

        var error = await Assert.ThrowsAsync<SocketException>(() => FactoryOf(host).ConnectAsync(silent.EndPoint).AsTask().WaitAsync(Wait));

        Assert.Equal(SocketError.TimedOut, error.SocketErrorCode);
        Assert.Contains("ConnectTimeout", error.Message);
        Assert.Contains(silent.EndPoint.ToString(), error.Message);
    }

    [Fact]
    public async Task ACancelledConnectThrowsOperationCanceled()
    {
        await using SpliceTestHost host = await StartAsync();
        using var silent = SilentListener.Start();
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => FactoryOf(host).ConnectAsync(silent.EndPoint, cancel.Token).AsTask().WaitAsync(Wait));
    }

    private sealed class OnLoop(int index) : ISpliceConnectionFeature
    {
        public int EventLoopIndex => index;

        public bool IsTransportPipeOwned => true;
    }
}
