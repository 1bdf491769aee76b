namespace SpliceTransport.Http;

/// <summary>
/// Why a request body was saved through Kestrel's body reader (copied) rather than spliced: the values of
/// <see cref="UploadResult.FallbackReason"/>, of the <c>splice.upload.fallback.reason</c> attribute on the
/// <c>splice.upload.fallbacks</c> counter, and of the Debug log that goes with it. The connection reasons are the
/// send side's (<see cref="FallbackReasons"/>): the same condition, the same value.
/// </summary>
internal static class UploadFallbackReasons
{
    /// <summary>The request did not arrive through SpliceTransport (Kestrel's socket transport, a test server).</summary>
    public const string OtherTransport = "other_transport";

    /// <inheritdoc cref="FallbackReasons.Protocol"/>
    public const string Protocol = FallbackReasons.Protocol;

    /// <inheritdoc cref="FallbackReasons.Tls"/>
    public const string Tls = FallbackReasons.Tls;

    /// <inheritdoc cref="FallbackReasons.TransportWrapped"/>
    public const string TransportWrapped = FallbackReasons.TransportWrapped;

    /// <summary>
    /// The body has no Content-Length (chunked): its framing must be parsed, so it passes through Kestrel.
    /// </summary>
    public const string Chunked = FallbackReasons.Chunked;

    /// <summary>
    /// The connection and the framing would allow a spliced body, but this version of SpliceTransport does not
    /// splice request bodies yet (issue #11): the body was streamed through the body reader. A replaced
    /// <c>Request.Body</c> (a decompression wrapper) is not told apart from this yet; the splice path will need to.
    /// </summary>
    public const string ReceiveSpliceUnavailable = "receive_splice_unavailable";
}
