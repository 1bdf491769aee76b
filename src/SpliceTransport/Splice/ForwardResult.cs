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
    /// <exception cref="ArgumentOutOfRangeException">A negative count, or more spliced bytes than bytes.</exception>
    public ForwardDirectionResult(long bytes, long splicedBytes, ForwardEnd end)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        ArgumentOutOfRangeException.ThrowIfNegative(splicedBytes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(splicedBytes, bytes);
        Bytes = bytes;
        SplicedBytes = splicedBytes;
        End = end;
    }

    /// <summary>Bytes delivered to the destination, spliced or copied.</summary>
    public long Bytes { get; }

    /// <summary>Of <see cref="Bytes"/>, those moved with splice(2), never through user space.</summary>
    public long SplicedBytes { get; }

    /// <summary>Of <see cref="Bytes"/>, those copied through the connections' pipes.</summary>
    public long CopiedBytes => Bytes - SplicedBytes;

    /// <summary>How the direction ended.</summary>
    public ForwardEnd End { get; }

    /// <inheritdoc />
    public override string ToString() => $"{Bytes} bytes ({SplicedBytes} spliced), {End}";
}

/// <summary>What <see cref="ConnectionForwardingExtensions.ForwardAsync"/> moved, each way.</summary>
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
