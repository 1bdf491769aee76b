using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Transport;
using SpliceTransport.Client;

namespace SpliceTransport;

/// <summary>
/// Outbound connections on SpliceTransport's event loops: TCP over IPv4 and IPv6 (<see cref="IPEndPoint"/>, or a
/// <see cref="DnsEndPoint"/> whose addresses are tried in order) and Unix sockets
/// (<see cref="UnixDomainSocketEndPoint"/>). The connect is non-blocking, on a loop; it honours the caller's
/// <see cref="CancellationToken"/> and <see cref="SpliceTransportOptions.ConnectTimeout"/>. A connection it returns
/// is a SpliceTransport connection like an accepted one, with the same pumps, features and shutdown semantics.
/// Registered as the <see cref="IConnectionFactory"/> by <c>UseSpliceTransport()</c>.
/// </summary>
/// <remarks>
/// A connection meant to be paired with an inbound one (a proxy's upstream) should be opened with
/// <see cref="ConnectPairedAsync"/>: it then lives on the inbound
/// connection's loop, so the pair's bytes never cross threads.
/// </remarks>
public sealed class SpliceConnectionFactory : IConnectionFactory
{
    private readonly SpliceConnectionListenerFactory _transport;

    internal SpliceConnectionFactory(SpliceConnectionListenerFactory transport) => _transport = transport;

    /// <summary>Connects to <paramref name="endpoint"/> on the next event loop, round-robin.</summary>
    /// <param name="endpoint">An <see cref="IPEndPoint"/>, a <see cref="DnsEndPoint"/> or a <see cref="UnixDomainSocketEndPoint"/>.</param>
    /// <param name="cancellationToken">Cancels the connect: the socket is closed, and <see cref="OperationCanceledException"/> thrown.</param>
    /// <returns>The connected, started connection; the caller disposes it.</returns>
    /// <exception cref="SocketException">Refused (ConnectionRefused), unreachable (NetworkUnreachable, HostUnreachable), no handshake within <see cref="SpliceTransportOptions.ConnectTimeout"/> (TimedOut), or another failure; the message names the end point.</exception>
    /// <exception cref="NotSupportedException">An end point of another type.</exception>
    /// <exception cref="ObjectDisposedException">The transport has stopped.</exception>
    public ValueTask<ConnectionContext> ConnectAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
        ConnectOnLoopAsync(endpoint, pairWith: null, cancellationToken);

    /// <summary>
    /// Connects to <paramref name="endpoint"/> on the event loop of <paramref name="pairWith"/>, so that bytes
    /// forwarded between the two connections never cross threads. A <paramref name="pairWith"/> that is not a
    /// SpliceTransport connection (another transport's) gets the next loop, round-robin.
    /// </summary>
    /// <param name="endpoint">An <see cref="IPEndPoint"/>, a <see cref="DnsEndPoint"/> or a <see cref="UnixDomainSocketEndPoint"/>.</param>
    /// <param name="pairWith">The connection the new one will be paired with, typically the inbound one.</param>
    /// <param name="cancellationToken">Cancels the connect: the socket is closed, and <see cref="OperationCanceledException"/> thrown.</param>
    /// <returns>The connected, started connection; the caller disposes it.</returns>
    /// <exception cref="SocketException">As for <see cref="ConnectAsync(EndPoint, CancellationToken)"/>.</exception>
    /// <exception cref="NotSupportedException">An end point of another type.</exception>
    /// <exception cref="ObjectDisposedException">The transport has stopped.</exception>
    public ValueTask<ConnectionContext> ConnectPairedAsync(EndPoint endpoint, ConnectionContext pairWith, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pairWith);
        return ConnectOnLoopAsync(endpoint, pairWith, cancellationToken);
    }

    private async ValueTask<ConnectionContext> ConnectOnLoopAsync(EndPoint endpoint, ConnectionContext? pairWith, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (endpoint is not (IPEndPoint or DnsEndPoint or UnixDomainSocketEndPoint))
        {
            throw new NotSupportedException($"SpliceConnectionFactory cannot connect to end point '{endpoint}' of type {endpoint.GetType().Name}: it connects to IPEndPoint, DnsEndPoint and UnixDomainSocketEndPoint.");
        }
        cancellationToken.ThrowIfCancellationRequested();
        SpliceTransportContext context = _transport.Context;
        EventLoop loop = LoopFor(context, pairWith);

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (context.Options.ConnectTimeout != Timeout.InfiniteTimeSpan)
        {
            timeout.CancelAfter(context.Options.ConnectTimeout);
        }
        try
        {
            if (endpoint is not DnsEndPoint dns)
            {
                return await ConnectToAsync(context, loop, endpoint, timeout.Token).ConfigureAwait(false);
            }
            // As Socket.ConnectAsync(DnsEndPoint) does: every address in the resolver's order, the first that
            // answers wins; the last failure is the one reported. The timeout covers them all.
            IPAddress[] addresses = await Dns.GetHostAddressesAsync(dns.Host, dns.AddressFamily, timeout.Token).ConfigureAwait(false);
            SocketException? last = null;
            foreach (IPAddress address in addresses)
            {
                try
                {
                    return await ConnectToAsync(context, loop, new IPEndPoint(address, dns.Port), timeout.Token).ConfigureAwait(false);
                }
                catch (SocketException ex) when (ex.SocketErrorCode != SocketError.TimedOut)
                {
                    last = ex;
                }
            }
            throw last ?? new SocketException((int)SocketError.HostNotFound, $"'{dns.Host}' has no address to connect to.");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new SocketException((int)SocketError.TimedOut,
                $"Connecting to {endpoint} took longer than SpliceTransportOptions.ConnectTimeout ({context.Options.ConnectTimeout}).");
        }
    }

    private static EventLoop LoopFor(SpliceTransportContext context, ConnectionContext? pairWith)
    {
        IReadOnlyList<EventLoop> loops = context.Loops.Loops;
        return pairWith?.Features.Get<ISpliceConnectionFeature>() is { } spliced && spliced.EventLoopIndex < loops.Count
            ? loops[spliced.EventLoopIndex]
            : context.Loops.Next();
    }

    /// <summary>One address: a socket, the handshake on the loop, then the connection, started.</summary>
    private static async Task<ConnectionContext> ConnectToAsync(SpliceTransportContext context, EventLoop loop, EndPoint endpoint, CancellationToken cancellationToken)
    {
        FileDescriptorHandle socket = ListenSockets.OpenStreamSocket(context.Syscalls, endpoint);
        PendingConnect connect;
        try
        {
            context.ApplyConnectionOptions(socket, endpoint);
            connect = PendingConnect.Start(loop, socket, context.Syscalls, endpoint.Serialize());
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        int outcome;
        try
        {
            outcome = await connect.Outcome.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            connect.Abandon(); // Unregisters and closes the socket on the loop.
            throw;
        }
        if (outcome != 0)
        {
            socket.Dispose();
            throw ErrnoExceptions.ForConnect(outcome, endpoint);
        }

        EndPoint? local = SocketAddresses.GetLocal(socket, endpoint);
        var connection = new SpliceConnection(socket, loop, context, local, endpoint, listenEndPoint: endpoint);
        context.Metrics.ConnectionConnected(endpoint);
        connection.Start();
        return connection;
    }
}
