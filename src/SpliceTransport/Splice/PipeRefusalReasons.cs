namespace SpliceTransport.Splice;

/// <summary>
/// Why <see cref="PipePool.TryRent"/> gave no pipe: the values of the <c>splice.pipe.refused.reason</c> attribute
/// on the <c>splice.pipe.refused</c> counter. Lower_snake_case, as OpenTelemetry asks of attribute values.
/// Whatever the reason, no byte has moved: the caller copies this transfer through user space, and asks again
/// for its next one (descriptors and pipe pages come back as other pipes close).
/// </summary>
internal static class PipeRefusalReasons
{
    /// <summary>pipe2 said EMFILE: this process has as many descriptors open as RLIMIT_NOFILE allows.</summary>
    public const string DescriptorLimit = "descriptor_limit";

    /// <summary>
    /// pipe2 said ENFILE: the system's file table is full (fs.file-max), or an unprivileged user is past
    /// /proc/sys/fs/pipe-user-pages-hard (0, no limit, by default).
    /// </summary>
    public const string SystemDescriptorLimit = "system_descriptor_limit";

    /// <summary>
    /// F_SETPIPE_SZ said EPERM: an unprivileged user is past /proc/sys/fs/pipe-user-pages-soft (16,384 pages,
    /// 64 MiB, by default: 64 pipes of 1 MiB), so new pipes are born two pages long and may not grow; or
    /// pipe-max-size was lowered after this process read it. A two-page pipe would cost more system calls than
    /// the copy it saves, so it is closed.
    /// </summary>
    public const string PipeSizeLimit = "pipe_size_limit";

    /// <summary>pipe2 or F_SETPIPE_SZ said ENOMEM: the kernel could not allocate the pipe or its ring.</summary>
    public const string OutOfMemory = "out_of_memory";

    /// <summary>Any other errno, which the refusal carries; none is expected.</summary>
    public const string Error = "error";
}
