using SpliceTransport.Forwarding;
namespace SpliceTransport.Http;

/// <summary>
/// Why a request body (or the rest of it, from some point on) was saved through Kestrel's body reader (copied)
/// rather than spliced; a pipe the pool refused is reported by its <c>PipeRefusalReasons</c> value. The values of
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

    /// <summary>Splicing request bodies is turned off (<see cref="SpliceTransportOptions.ZeroCopyUploads"/> false).</summary>
    public const string Disabled = "disabled";

    /// <summary>
    /// Less of the body was left after the first read than a splice is worth (<see cref="RequestBodyFileWriter.MinimumSplicedBody"/>):
    /// renting a pipe, parking the receive pump and the hops to the disk threads cost more than copying it.
    /// </summary>
    public const string SmallBody = "small_body";

    /// <summary>Something read the body before SaveBodyToFileAsync: the bytes already consumed cannot be counted, so the rest is read as it comes.</summary>
    public const string BodyReadBefore = "body_read_before";

    /// <summary>
    /// <c>Request.Body</c> or <c>BodyReader</c> is not Kestrel's any more (request decompression, a middleware's
    /// wrapper): what must be saved is what the wrapper reads, not the socket's bytes.
    /// </summary>
    public const string BodyWrapped = "body_wrapped";

    /// <summary>The handle given is not a regular file (a pipe, a device, a socket): splice into it is not the file's semantics.</summary>
    public const string NotRegularFile = FallbackReasons.NotRegularFile;

    /// <summary>The receive side had ended (the peer's FIN came, or the connection is closing) before the body could be spliced.</summary>
    public const string ReceiveEnded = ForwardFallbackReasons.ReceiveEnded;

    /// <summary>splice(2) refused the socket (EINVAL): the rest of the body was read through Kestrel.</summary>
    public const string SpliceUnsupported = ForwardFallbackReasons.SpliceUnsupported;

    /// <summary>
    /// The file cannot take a splice (EINVAL: opened with O_APPEND, or a file system without splice support): the
    /// bytes still went socket → kernel pipe without a copy, and were copied out of the pipe into the file.
    /// </summary>
    public const string FileSpliceUnsupported = "file_splice_unsupported";

    /// <summary>Writing the file failed (a full disk): the upload fails with that error, and the rest of the body is read and dropped by Kestrel.</summary>
    public const string FileFailed = "file_failed";

    /// <summary>The upload was canceled mid-body: the bytes on their way went back to Kestrel's input.</summary>
    public const string Canceled = "canceled";
}
