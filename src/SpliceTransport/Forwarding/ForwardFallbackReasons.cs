using SpliceTransport.Splice;
namespace SpliceTransport.Forwarding;

/// <summary>
/// Why a forwarded direction copied bytes it could have spliced: the values of
/// <see cref="ForwardDirectionResult.FallbackReason"/> and of the <c>splice.forward.fallback.reason</c> attribute
/// on <c>splice.forward.fallbacks</c>. A pipe the pool refused is reported with the pool's own reason (one of
/// <see cref="PipeRefusalReasons"/>), and the direction splices again once a pipe is to be had.
/// </summary>
internal static class ForwardFallbackReasons
{
    /// <summary>A connection is not SpliceTransport's (Kestrel's socket transport, a test double): its socket is not ours to splice.</summary>
    public const string OtherTransport = "other_transport";

    /// <summary>A connection's transport is wrapped by TLS: the bytes on the socket are not the bytes to forward.</summary>
    public const string Tls = "tls";

    /// <summary>Connection middleware replaced a connection's transport pipe (logging, say): its bytes must pass through it.</summary>
    public const string TransportWrapped = "transport_wrapped";

    /// <summary>The connections run on different event loops; open the upstream with <c>ConnectPairedAsync</c> to share one.</summary>
    public const string DifferentLoops = "different_loops";

    /// <summary>The source had already stopped receiving (its FIN or an error came before the forward): its input holds the rest.</summary>
    public const string ReceiveEnded = "receive_ended";

    /// <summary>splice(2) said EINVAL before any byte moved: the kernel cannot splice these sockets.</summary>
    public const string SpliceUnsupported = "splice_unsupported";
}
