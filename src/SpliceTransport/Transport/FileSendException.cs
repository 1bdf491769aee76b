using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// A file segment could not be sent because of the file, not the connection: the response cannot be completed
/// as framed, so the connection is aborted, and the body feature that queued the file logs it once, at Error.
/// </summary>
internal abstract class FileSendException(string message, Exception? innerException = null) : IOException(message, innerException);

/// <summary>A file became shorter than the bytes promised for it while it was being sent.</summary>
internal sealed class FileTruncatedException(FileSegment file)
    : FileSendException($"The file '{file.Path}' was truncated while it was being sent: {file.Count - file.Remaining} of {file.Count} bytes from offset {file.Offset - (file.Count - file.Remaining)} had been sent when it ended.");

/// <summary>Reading a file failed while it was being sent (an I/O error of its device, for instance).</summary>
internal sealed class FileReadException(FileSegment file, SyscallException error)
    : FileSendException($"Reading the file '{file.Path}' failed at offset {file.Offset} after {file.Count - file.Remaining} of {file.Count} bytes had been sent: {error.Message}", error);
