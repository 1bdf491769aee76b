using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace SpliceTransport;

/// <summary>
/// Forwarding between two connections, both ways, as a TCP proxy or tunnel needs it: the bytes each side sends
/// reach the other, a FIN one way becomes a FIN the other way while the opposite direction goes on (half-close),
/// and a reset becomes a reset.
/// </summary>
/// <remarks>
/// Today every byte is copied through the connections' pipes (System.IO.Pipelines, with their back-pressure: a
/// slow destination stops reads from its source once <see cref="SpliceTransportOptions.MaxWriteBufferSize"/> is
/// queued). The splice(2) path between two SpliceTransport sockets is not built yet (issue #12):
/// <see cref="ForwardDirectionResult.SplicedBytes"/> is then 0. The call works on any transport; half-close
/// needs one that keeps reading after its output completes, as SpliceTransport does (Kestrel's socket transport
/// shuts both directions down when its output completes).
/// </remarks>
public static class ConnectionForwardingExtensions
{
    /// <summary>
    /// Moves bytes between <paramref name="connection"/> and <paramref name="other"/>, both ways, until both
    /// directions have ended. Bytes either connection had already received go first.
    /// </summary>
    /// <param name="connection">One side, typically the inbound (client) connection.</param>
    /// <param name="other">The other side, typically an upstream connection.</param>
    /// <param name="cancellationToken">Stops forwarding and throws <see cref="OperationCanceledException"/>; both connections stay open, for the caller to close.</param>
    /// <returns>What moved each way, and how each direction ended.</returns>
    /// <exception cref="ArgumentException">Both arguments are the same connection.</exception>
    public static async Task<ForwardResult> ForwardAsync(this ConnectionContext connection, ConnectionContext other, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(other);
        if (ReferenceEquals(connection, other))
        {
            throw new ArgumentException($"A connection cannot be forwarded to itself (connection {connection.ConnectionId}).", nameof(other));
        }
        Task<ForwardDirectionResult> outbound = CopyAsync(connection, other, cancellationToken);
        Task<ForwardDirectionResult> inbound = CopyAsync(other, connection, cancellationToken);
        await Task.WhenAll(outbound, inbound).ConfigureAwait(false);
        return new ForwardResult(await outbound.ConfigureAwait(false), await inbound.ConfigureAwait(false));
    }

    /// <summary>
    /// One direction: read what <paramref name="source"/> received, write it to <paramref name="destination"/>,
    /// flush (waiting while the destination is full: back-pressure), until the source ends.
    ///
    /// Invariant: a read is never cancelled through a token, which would leave the pipe faulted for the caller who
    /// keeps the connection after a cancelled forward; the token cancels the pending read instead, and the loop
    /// leaves with nothing consumed that was not also written.
    /// </summary>
    private static async Task<ForwardDirectionResult> CopyAsync(ConnectionContext source, ConnectionContext destination, CancellationToken cancellationToken)
    {
        PipeReader input = source.Transport.Input;
        PipeWriter output = destination.Transport.Output;
        long bytes = 0;
        using CancellationTokenRegistration cancelRead = cancellationToken.UnsafeRegister(static state => ((PipeReader)state!).CancelPendingRead(), input);
        try
        {
            while (true)
            {
                ReadResult read = await input.ReadAsync(CancellationToken.None).ConfigureAwait(false);
                if (read.IsCanceled)
                {
                    input.AdvanceTo(read.Buffer.Start);
                    cancellationToken.ThrowIfCancellationRequested();
                    continue; // Someone else cancelled the pending read: nothing consumed, read again.
                }
                ReadOnlySequence<byte> buffer = read.Buffer;
                foreach (ReadOnlyMemory<byte> segment in buffer)
                {
                    output.Write(segment.Span);
                }
                bytes += buffer.Length;
                input.AdvanceTo(buffer.End);
                if (!buffer.IsEmpty)
                {
                    FlushResult flush = await output.FlushAsync(cancellationToken).ConfigureAwait(false);
                    if (flush.IsCompleted)
                    {
                        return new ForwardDirectionResult(bytes, 0, ForwardEnd.DestinationClosed);
                    }
                }
                if (read.IsCompleted)
                {
                    // The source's FIN: the destination gets one after the bytes, and may still answer.
                    await output.CompleteAsync().ConfigureAwait(false);
                    return new ForwardDirectionResult(bytes, 0, ForwardEnd.Fin);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or ConnectionAbortedException && !cancellationToken.IsCancellationRequested)
        {
            // Reset or aborted (ConnectionResetException is an IOException): so is the destination, as TCP would
            // tell a peer whose bytes were lost.
            destination.Abort(new ConnectionAbortedException($"Connection {source.ConnectionId}, forwarded to this one, was reset.", ex));
            return new ForwardDirectionResult(bytes, 0, ForwardEnd.Reset);
        }
    }
}
