using System.IO.Pipelines;

namespace SpliceTransport.Transport;

/// <summary>
/// What the HTTP layer may ask of a SpliceTransport connection to splice a request body into a file, and nothing
/// more: it reaches the connection through this feature (a request's features fall back to its connection's),
/// never by casting to the connection type. The mirror of <see cref="IZeroCopyOutputFeature"/>.
///
/// The sequence (see <c>Http/RequestBodyFileWriter</c>): <see cref="PauseReceivingAsync"/>, so the socket's next
/// bytes stay in the socket; read what the input already holds through Kestrel's body reader; then
/// <see cref="ResumeReceiving"/> with a <see cref="ReceiveSegment"/> for the rest of the body, or without one.
/// </summary>
internal interface IZeroCopyInputFeature
{
    /// <summary>The connection's id, for logs.</summary>
    string ConnectionId { get; }

    /// <summary>True while nothing (TLS, connection middleware) has wrapped the transport pipe.</summary>
    bool IsTransportPipeOwned { get; }

    /// <summary>Whether the transport splices request bodies at all (<see cref="SpliceTransportOptions.ZeroCopyUploads"/>).</summary>
    bool ZeroCopyUploads { get; }

    /// <summary>The system calls of the data path (reserving the file's blocks goes through them too).</summary>
    Interop.Syscalls Syscalls { get; }

    /// <summary>
    /// Records the current request's body as the first middleware sees it (Kestrel's body reader, and the
    /// Content-Length Kestrel framed it by), every request, so that nothing of an earlier request's stays behind.
    /// </summary>
    void RecordRequestBodyAtStart(PipeReader? bodyReader, long? contentLength);

    /// <summary>
    /// True when <paramref name="bodyReader"/> and <paramref name="contentLength"/> are what the first middleware saw:
    /// the body is not wrapped, and the Content-Length the rest of a splice is counted from is the one Kestrel frames
    /// the body by (a middleware that changed the header would make the pump read past the body).
    /// </summary>
    bool IsRequestBodyAsAtStart(PipeReader bodyReader, long contentLength);

    /// <summary>
    /// Stops the receive pump before its next recv(2). True once it is stopped; false if receiving has already
    /// ended (the input holds all there will be). Always followed by <see cref="ResumeReceiving"/> when true.
    /// </summary>
    Task<bool> PauseReceivingAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Lets the receive pump go on: into <paramref name="segment"/> first when one is given (its bytes are spliced
    /// into its file, placeholders go into the input), then reading as ever. Any thread.
    /// </summary>
    void ResumeReceiving(ReceiveSegment? segment);
}
