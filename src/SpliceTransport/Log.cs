using Microsoft.Extensions.Logging;

namespace SpliceTransport;

/// <summary>Every log message of the transport, with a stable event id (1xx engine and transport, 2xx HTTP, 3xx hosting).</summary>
internal static partial class Log
{
    [LoggerMessage(100, LogLevel.Debug, "SpliceTransport started {ThreadCount} event loops.", EventName = "LoopsStarted")]
    public static partial void LoopsStarted(ILogger logger, int threadCount);

    [LoggerMessage(101, LogLevel.Critical, "Event loop {Index}: epoll_wait failed.", EventName = "EpollWaitFailed")]
    public static partial void EpollWaitFailed(ILogger logger, int index, Exception exception);

    [LoggerMessage(102, LogLevel.Error, "Event loop {Index}: a handler threw.", EventName = "HandlerFailed")]
    public static partial void HandlerFailed(ILogger logger, int index, Exception exception);

    [LoggerMessage(103, LogLevel.Debug, "Listening on {EndPoint} with {AcceptorCount} acceptor(s).", EventName = "ListenerBound")]
    public static partial void ListenerBound(ILogger logger, string endPoint, int acceptorCount);

    [LoggerMessage(104, LogLevel.Error, "accept4 ran out of resources; retrying shortly.", EventName = "AcceptResourcesExhausted")]
    public static partial void AcceptResourcesExhausted(ILogger logger, Exception exception);

    [LoggerMessage(105, LogLevel.Warning, "Accepting a connection failed.", EventName = "AcceptFailed")]
    public static partial void AcceptFailed(ILogger logger, Exception exception);

    [LoggerMessage(106, LogLevel.Debug, "Connection id \"{ConnectionId}\" reset by the peer.", EventName = "ConnectionReset")]
    public static partial void ConnectionReset(ILogger logger, string connectionId);

    [LoggerMessage(107, LogLevel.Debug, "Connection id \"{ConnectionId}\" failed.", EventName = "ConnectionError")]
    public static partial void ConnectionError(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(108, LogLevel.Debug, "Connection id \"{ConnectionId}\" aborted: {Reason}", EventName = "ConnectionAborted")]
    public static partial void ConnectionAborted(ILogger logger, string connectionId, string reason);

    [LoggerMessage(109, LogLevel.Debug, "Connection id \"{ConnectionId}\": file segment of {Path} ended {Outcome}: {Sent} of {Count} bytes sent.", EventName = "FileSegmentEnded")]
    public static partial void FileSegmentEnded(ILogger logger, string connectionId, string path, string outcome, long sent, long count);

    [LoggerMessage(110, LogLevel.Debug, "Connection id \"{ConnectionId}\" sending FIN because: \"{Reason}\"", EventName = "ConnectionWriteFin")]
    public static partial void ConnectionWriteFin(ILogger logger, string connectionId, string reason);

    [LoggerMessage(111, LogLevel.Debug, "Connection id \"{ConnectionId}\" sending RST because: \"{Reason}\"", EventName = "ConnectionWriteRst")]
    public static partial void ConnectionWriteRst(ILogger logger, string connectionId, string reason);

    [LoggerMessage(200, LogLevel.Debug, "Connection id \"{ConnectionId}\": {Path} sent through the normal path because {Reason}.", EventName = "ZeroCopyFallback")]
    public static partial void ZeroCopyFallback(ILogger logger, string connectionId, string path, string reason);

    [LoggerMessage(201, LogLevel.Error, "Connection id \"{ConnectionId}\": the file being sent was truncated; the connection was aborted.", EventName = "FileTruncated")]
    public static partial void FileTruncated(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(202, LogLevel.Error, "Connection id \"{ConnectionId}\": the file being sent could not be read; the connection was aborted.", EventName = "FileReadFailed")]
    public static partial void FileReadFailed(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(203, LogLevel.Information, "cachestat(2) is not available (Linux before 6.5): file chunks are sent without checking that they are in the page cache, so a cold file can make an event loop wait for the disk.", EventName = "CacheProbeUnavailable")]
    public static partial void CacheProbeUnavailable(ILogger logger);

    [LoggerMessage(204, LogLevel.Debug, "Connection id \"{ConnectionId}\": the request body is saved to a file through Kestrel's body reader because {Reason}.", EventName = "UploadFallback")]
    public static partial void UploadFallback(ILogger logger, string connectionId, string reason);

    [LoggerMessage(400, LogLevel.Warning, "Connection id \"{ConnectionId}\": no pipe for the capture to {Path} ({Refusal}); the direction is forwarded but not captured.", EventName = "CaptureUnavailable")]
    public static partial void CaptureUnavailable(ILogger logger, string connectionId, string path, string refusal);

    [LoggerMessage(401, LogLevel.Warning, "Writing the capture {Path} failed; the capture stops there, the forward goes on.", EventName = "CaptureFailed")]
    public static partial void CaptureFailed(ILogger logger, string path, Exception exception);

    [LoggerMessage(300, LogLevel.Warning, "UseSpliceTransport() was called, but SpliceTransport runs only on 64-bit Linux; Kestrel's own socket transport stays in place.", EventName = "UnsupportedPlatform")]
    public static partial void UnsupportedPlatform(ILogger logger);
}
