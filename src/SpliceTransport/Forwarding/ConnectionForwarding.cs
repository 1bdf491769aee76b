using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using SpliceTransport.Splice;
using SpliceTransport.Transport;
using SpliceTransport.Files;
using SpliceTransport.Forwarding;

namespace SpliceTransport;

/// <summary>
/// Forwarding between two connections, both ways, as a TCP proxy or tunnel needs it: the bytes each side sends
/// reach the other, a FIN one way becomes a FIN the other way while the opposite direction goes on (half-close),
/// and a reset becomes a reset.
/// </summary>
/// <remarks>
/// <para>Zero-copy when both connections are SpliceTransport's, on one event loop (open the upstream with
/// <see cref="SpliceConnectionFactory.ConnectPairedAsync"/>), with their transport pipes still their own (no TLS,
/// no connection middleware wrapping them): then each direction moves the socket's bytes itself, on the loop,
/// without the connections' pipes. Bytes already received go first; then, by default
/// (<see cref="ForwardSpliceMode.Auto"/>), a stream is spliced (splice(2) socket → kernel pipe → socket, never in
/// user space) and small exchanges are copied through one 16 KiB buffer, as HAProxy's splice-auto does.
/// <see cref="ForwardDirectionResult.SplicedBytes"/> says how much was spliced.</para>
/// <para>Otherwise every byte is copied through the connections' pipes (System.IO.Pipelines, with their
/// back-pressure), and <see cref="ForwardDirectionResult.FallbackReason"/> says why. That works on any transport;
/// half-close needs one that keeps reading after its output completes, as SpliceTransport does (Kestrel's socket
/// transport shuts both directions down when its output completes).</para>
/// </remarks>
public static class ConnectionForwardingExtensions
{
    /// <summary>
    /// Moves bytes between <paramref name="connection"/> and <paramref name="other"/>, both ways, until both
    /// directions have ended. Bytes either connection had already received go first.
    /// </summary>
    /// <param name="connection">One side, typically the inbound (client) connection.</param>
    /// <param name="other">The other side, typically an upstream connection.</param>
    /// <param name="cancellationToken">Stops forwarding and throws <see cref="OperationCanceledException"/>; both connections stay open, for the caller to close, and every byte taken from one is delivered to the other.</param>
    /// <returns>What moved each way, and how each direction ended.</returns>
    /// <exception cref="ArgumentException">Both arguments are the same connection.</exception>
    public static Task<ForwardResult> ForwardAsync(this ConnectionContext connection, ConnectionContext other, CancellationToken cancellationToken) =>
        ForwardAsync(connection, other, options: null, cancellationToken);

    /// <summary>
    /// Moves bytes between <paramref name="connection"/> and <paramref name="other"/>, both ways, until both
    /// directions have ended, as <paramref name="options"/> say: when to splice, and which directions to capture.
    /// </summary>
    /// <param name="connection">One side, typically the inbound (client) connection.</param>
    /// <param name="other">The other side, typically an upstream connection.</param>
    /// <param name="options">How to forward; null for the defaults.</param>
    /// <param name="cancellationToken">Stops forwarding and throws <see cref="OperationCanceledException"/>; both connections stay open, for the caller to close, and every byte taken from one is delivered to the other.</param>
    /// <returns>What moved each way, how each direction ended, and what each capture recorded.</returns>
    /// <exception cref="ArgumentException">Both arguments are the same connection, or an option is invalid (the message names it).</exception>
    /// <exception cref="NotSupportedException">A capture was asked for, but neither connection is SpliceTransport's.</exception>
    /// <exception cref="IOException">A capture file cannot be created (the message names it).</exception>
    public static async Task<ForwardResult> ForwardAsync(this ConnectionContext connection, ConnectionContext other, ForwardOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(other);
        if (ReferenceEquals(connection, other))
        {
            throw new ArgumentException($"A connection cannot be forwarded to itself (connection {connection.ConnectionId}).", nameof(other));
        }
        options ??= new ForwardOptions();
        options.Validate();
        ISocketHandoffFeature? mine = connection.Features.Get<ISocketHandoffFeature>();
        ISocketHandoffFeature? theirs = other.Features.Get<ISocketHandoffFeature>();
        string? fallbackReason = FallbackReason(connection, mine, other, theirs);

        CaptureWriter? outboundCapture = OpenCapture(options.OutboundCapturePath, connection, mine ?? theirs);
        CaptureWriter? inboundCapture;
        try
        {
            inboundCapture = OpenCapture(options.InboundCapturePath, other, mine ?? theirs);
        }
        catch
        {
            await DisposeCapturesAsync(outboundCapture, null).ConfigureAwait(false);
            throw;
        }
        Task<ForwardDirectionResult> outbound = fallbackReason is null
            ? new ForwardingDirection(connection, mine!, other, theirs!, options.SpliceMode, outboundCapture, cancellationToken).RunAsync()
            : CopyAsync(connection, other, fallbackReason, outboundCapture, cancellationToken);
        Task<ForwardDirectionResult> inbound = fallbackReason is null
            ? new ForwardingDirection(other, theirs!, connection, mine!, options.SpliceMode, inboundCapture, cancellationToken).RunAsync()
            : CopyAsync(other, connection, fallbackReason, inboundCapture, cancellationToken);

        // Both directions end before the captures close (their last bytes are written by then); a direction's
        // exception (cancellation) is rethrown after that, from the awaits below.
        await ((Task)Task.WhenAll(outbound, inbound)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        await DisposeCapturesAsync(outboundCapture, inboundCapture).ConfigureAwait(false);
        return new ForwardResult(
            WithCapture(await outbound.ConfigureAwait(false), outboundCapture),
            WithCapture(await inbound.ConfigureAwait(false), inboundCapture));
    }

    /// <summary>
    /// Null when the pair can be forwarded on the loop, without the connections' pipes; otherwise why not.
    /// </summary>
    private static string? FallbackReason(ConnectionContext connection, ISocketHandoffFeature? mine, ConnectionContext other, ISocketHandoffFeature? theirs)
    {
        if (mine is null || theirs is null)
        {
            return ForwardFallbackReasons.OtherTransport;
        }
        if (!mine.IsTransportPipeOwned || !theirs.IsTransportPipeOwned)
        {
            return connection.Features.Get<ITlsHandshakeFeature>() is not null || other.Features.Get<ITlsHandshakeFeature>() is not null
                ? ForwardFallbackReasons.Tls
                : ForwardFallbackReasons.TransportWrapped;
        }
        return ReferenceEquals(mine.Loop, theirs.Loop) ? null : ForwardFallbackReasons.DifferentLoops;
    }

    private static CaptureWriter? OpenCapture(string? path, ConnectionContext source, ISocketHandoffFeature? transport)
    {
        if (path is null)
        {
            return null;
        }
        if (transport is null)
        {
            throw new NotSupportedException($"Capturing a forward (to '{path}') needs a SpliceTransport connection on one side: it tees through the transport's kernel pipes.");
        }
        return CaptureWriter.Open(path, source.ConnectionId, transport.Pipes, transport.DiskThreads, transport.Metrics, transport.Logger);
    }

    private static ForwardDirectionResult WithCapture(ForwardDirectionResult result, CaptureWriter? capture) =>
        capture is null ? result : result.WithCapture(capture.CapturedBytes, capture.DroppedBytes);

    /// <summary>
    /// The source of a forwarded direction was reset or aborted (<paramref name="cause"/>): so is its destination,
    /// as TCP would tell a peer whose bytes were lost.
    /// </summary>
    internal static void ResetForwarded(string sourceId, ConnectionContext destination, Exception cause) =>
        destination.Abort(new ConnectionAbortedException($"Connection {sourceId}, forwarded to this one, was reset.", cause));

    /// <summary>Waits for the captures' last writes and closes them.</summary>
    private static async ValueTask DisposeCapturesAsync(CaptureWriter? outbound, CaptureWriter? inbound)
    {
        try
        {
            if (outbound is not null)
            {
                await outbound.DisposeAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            if (inbound is not null)
            {
                await inbound.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// One direction through the connections' pipes, for a pair the loop cannot forward (<paramref name="fallbackReason"/>,
    /// counted once): read what <paramref name="source"/> received, write it to <paramref name="destination"/> (and the
    /// capture), flush (waiting while the destination is full: back-pressure), until the source ends.
    ///
    /// Invariant: a read is never cancelled through a token, which would leave the pipe faulted for the caller who
    /// keeps the connection after a cancelled forward; the token cancels the pending read instead, and the loop
    /// leaves with nothing consumed that was not also written.
    /// </summary>
    internal static async Task<ForwardDirectionResult> CopyAsync(ConnectionContext source, ConnectionContext destination, string fallbackReason, CaptureWriter? capture, CancellationToken cancellationToken)
    {
        ISocketHandoffFeature? metricsSource = source.Features.Get<ISocketHandoffFeature>() ?? destination.Features.Get<ISocketHandoffFeature>();
        metricsSource?.Metrics.ForwardFellBack(fallbackReason);
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
                    capture?.Write(segment.Span);
                }
                bytes += buffer.Length;
                metricsSource?.Metrics.Forwarded(buffer.Length, spliced: false);
                input.AdvanceTo(buffer.End);
                if (!buffer.IsEmpty)
                {
                    FlushResult flush = await output.FlushAsync(cancellationToken).ConfigureAwait(false);
                    if (flush.IsCompleted)
                    {
                        return new ForwardDirectionResult(bytes, 0, ForwardEnd.DestinationClosed, fallbackReason);
                    }
                }
                if (read.IsCompleted)
                {
                    // The source's FIN: the destination gets one after the bytes, and may still answer.
                    await output.CompleteAsync().ConfigureAwait(false);
                    return new ForwardDirectionResult(bytes, 0, ForwardEnd.Fin, fallbackReason);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or ConnectionAbortedException && !cancellationToken.IsCancellationRequested)
        {
            // Reset or aborted (ConnectionResetException is an IOException): so is the destination, as TCP would
            // tell a peer whose bytes were lost.
            ResetForwarded(source.ConnectionId, destination, ex);
            return new ForwardDirectionResult(bytes, 0, ForwardEnd.Reset, fallbackReason);
        }
    }
}
