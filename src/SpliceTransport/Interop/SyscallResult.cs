namespace SpliceTransport.Interop;

/// <summary>
/// What a system call returned, as a value: a count (0 or more) or an errno. The data path branches on it
/// instead of catching exceptions, as Kestrel's <c>SocketOperationResult</c> does; an exception is made only
/// where a result becomes the application's business (<see cref="ToException"/>).
/// </summary>
internal readonly struct SyscallResult
{
    /// <summary>A count when 0 or more; the errno, negated, when less.</summary>
    private readonly long _value;

    private SyscallResult(long value) => _value = value;

    public static SyscallResult Success(long count) => new(count);

    public static SyscallResult Failure(int errno) => new(-(long)errno);

    /// <summary>The C convention: -1 means failure with errno set, anything else is the count.</summary>
    public static SyscallResult FromReturn(nint result) => result >= 0 ? new(result) : Failure(LibC.LastErrno);

    public bool IsSuccess => _value >= 0;

    /// <summary>The count the call returned; 0 for a failure.</summary>
    public long Count => _value >= 0 ? _value : 0;

    /// <summary>The errno of a failure; 0 for a success.</summary>
    public int Errno => _value >= 0 ? 0 : (int)-_value;

    /// <summary>
    /// EAGAIN: the descriptor is not ready (a socket with nothing to read or no room to write). Never an error:
    /// the caller waits for the next readiness edge.
    /// </summary>
    public bool WouldBlock => _value == -Interop.Errno.EAGAIN;

    /// <summary>The peer went away (reset, broken pipe …): the end of a connection, not a fault of ours.</summary>
    public bool IsConnectionReset => _value < 0 && Interop.Errno.IsConnectionReset(Errno);

    /// <summary>The call is not supported for this descriptor, file system or kernel (see <see cref="Interop.Errno.IsUnsupported"/>).</summary>
    public bool IsUnsupported => _value < 0 && Interop.Errno.IsUnsupported(Errno);

    /// <summary>The failure as the exception the application sees, naming the call and the errno.</summary>
    public SyscallException ToException(string syscall, string? detail = null) => new(syscall, Errno, detail);

    /// <summary>The count, or the failure as <see cref="ToException"/>: for a call whose failure ends what the caller does.</summary>
    public long CountOrThrow(string syscall, string? detail = null) => IsSuccess ? Count : throw ToException(syscall, detail);

    /// <summary>The new descriptor a call returned (its count), owned by the caller, or the failure as <see cref="ToException"/>.</summary>
    public FileDescriptorHandle DescriptorOrThrow(string syscall, string? detail = null) => new((int)CountOrThrow(syscall, detail));

    public override string ToString() => IsSuccess ? Count.ToString(System.Globalization.CultureInfo.InvariantCulture) : Interop.Errno.Name(Errno);
}
