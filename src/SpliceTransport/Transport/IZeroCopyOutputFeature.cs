using Microsoft.AspNetCore.Connections;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// What the HTTP layer may ask of a SpliceTransport connection to send a file zero-copy, and nothing more: it
/// reaches the connection through this feature, never by casting to the connection type.
/// </summary>
internal interface IZeroCopyOutputFeature
{
    /// <summary>The connection's id, for logs.</summary>
    string ConnectionId { get; }

    /// <summary>True while nothing (TLS, connection middleware) has wrapped the transport pipe.</summary>
    bool IsTransportPipeOwned { get; }

    /// <summary>The transport's output writer, which queues file ranges in order with the pipe bytes.</summary>
    SpliceOutputWriter OutputWriter { get; }

    /// <summary>The system calls of the data path (reading a file's prefix goes through them too).</summary>
    Interop.Syscalls Syscalls { get; }

    /// <summary>The transport's cache of open file descriptors.</summary>
    OpenFileCache Files { get; }

    /// <summary>Aborts the connection: it is reset, and every pending file completes as not sent.</summary>
    void Abort(ConnectionAbortedException abortReason);
}
