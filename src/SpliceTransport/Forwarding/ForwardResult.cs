namespace SpliceTransport;

/// <summary>How one direction of a forwarded pair ended.</summary>
public enum ForwardEnd
{
    /// <summary>The source sent a FIN: everything it sent was delivered, and the destination got a FIN in turn.</summary>
    Fin = 0,

    /// <summary>The source was reset or aborted: the destination was reset in turn (bytes still in flight are lost, as with TCP).</summary>
    Reset = 1,

    /// <summary>The destination stopped taking bytes (it closed or was reset): the source's further bytes had nowhere to go.</summary>
    DestinationClosed = 2,
}

/// <summary>What moved in one direction of a forwarded pair, and how it ended.</summary>
public readonly struct ForwardDirectionResult
{
    /// <summary>Creates a result.</summary>
    /// <param name="bytes">Bytes delivered to the destination, spliced or copied.</param>
    /// <param name="splicedBytes">Of those, the bytes moved with splice(2), never through user space.</param>
    /// <param name="end">How the direction ended.</param>
    /// <param name="fallbackReason">Why the direction copied what it could have spliced, if it did; null otherwise.</param>
    /// <param name="capturedBytes">Bytes written to the direction's capture file.</param>
    /// <param name="captureDroppedBytes">Bytes the capture dropped (it could not keep up, or had no pipe or file).</param>
    /// <exception cref="ArgumentOutOfRangeException">A negative count, or more spliced bytes than bytes.</exception>
    public ForwardDirectionResult(long bytes, long splicedBytes, ForwardEnd end, string? fallbackReason = null, long capturedBytes = 0, long captureDroppedBytes = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        ArgumentOutOfRangeException.ThrowIfNegative(splicedBytes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(splicedBytes, bytes);
        ArgumentOutOfRangeException.ThrowIfNegative(capturedBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(captureDroppedBytes);
        Bytes = bytes;
        SplicedBytes = splicedBytes;
        End = end;
        FallbackReason = fallbackReason;
        CapturedBytes = capturedBytes;
        CaptureDroppedBytes = captureDroppedBytes;
    }

    /// <summary>Bytes delivered to the destination, spliced or copied.</summary>
    public long Bytes { get; }

    /// <summary>Of <see cref="Bytes"/>, those moved with splice(2), never through user space.</summary>
    public long SplicedBytes { get; }

    /// <summary>
    /// Of <see cref="Bytes"/>, those copied: the bytes buffered before forwarding began, small exchanges (splice-auto
    /// copies them), and everything when the direction could not splice (<see cref="FallbackReason"/>).
    /// </summary>
    public long CopiedBytes => Bytes - SplicedBytes;

    /// <summary>How the direction ended.</summary>
    public ForwardEnd End { get; }

    /// <summary>
    /// Why the direction copied bytes it could have spliced, lower_snake_case as on the
    /// <c>splice.forward.fallbacks</c> metric: <c>other_transport</c>, <c>tls</c>, <c>transport_wrapped</c>,
    /// <c>different_loops</c>, <c>receive_ended</c>, <c>splice_unsupported</c>, or the reason the pipe pool refused a
    /// pipe (<c>descriptor_limit</c>, <c>pipe_size_limit</c>, …). Null when nothing stood in the way (small exchanges
    /// copied by splice-auto's choice are not a fallback).
    /// </summary>
    public string? FallbackReason { get; }

    /// <summary>Bytes of this direction written to its capture file; 0 without a capture.</summary>
    public long CapturedBytes { get; }

    /// <summary>
    /// Bytes of this direction the capture dropped. With a capture, <see cref="CapturedBytes"/> plus these is the
    /// bytes taken from the source: <see cref="Bytes"/>, plus those a destination that failed (<see cref="ForwardEnd.Reset"/>,
    /// <see cref="ForwardEnd.DestinationClosed"/>) never took. The missing ranges are listed in the capture's <c>.gaps</c> file.
    /// </summary>
    public long CaptureDroppedBytes { get; }

    /// <summary>This result with the counts of the capture that recorded the direction.</summary>
    internal ForwardDirectionResult WithCapture(long captured, long dropped) => new(Bytes, SplicedBytes, End, FallbackReason, captured, dropped);

    /// <inheritdoc />
    public override string ToString() =>
        $"{Bytes} bytes ({SplicedBytes} spliced{(FallbackReason is null ? "" : $", copied because {FallbackReason}")}), {End}";
}

/// <summary>What <c>ForwardAsync</c> (<see cref="ConnectionForwardingExtensions"/>) moved, each way.</summary>
public sealed class ForwardResult
{
    /// <summary>Creates a result.</summary>
    /// <param name="outbound">From the connection forwarded to the other one.</param>
    /// <param name="inbound">From the other connection back.</param>
    public ForwardResult(ForwardDirectionResult outbound, ForwardDirectionResult inbound)
    {
        Outbound = outbound;
        Inbound = inbound;
    }

    /// <summary>From the connection <c>ForwardAsync</c> was called on to the other one (a proxy's client to its upstream).</summary>
    public ForwardDirectionResult Outbound { get; }

    /// <summary>From the other connection back (a proxy's upstream to its client).</summary>
    public ForwardDirectionResult Inbound { get; }

    /// <inheritdoc />
    public override string ToString() => $"outbound {Outbound}; inbound {Inbound}";
}
