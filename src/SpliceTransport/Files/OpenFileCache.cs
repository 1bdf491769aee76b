using System.Collections.Concurrent;
using SpliceTransport.Interop;
using SpliceTransport.Http;

namespace SpliceTransport.Files;

/// <summary>
/// Open descriptors of the files served zero-copy, kept for the next request for the same path (nginx's
/// <c>open_file_cache</c>): a hit costs one statx of the path instead of open, a statx of the descriptor, an fcntl
/// and a close. sendfile and the residency probe take explicit offsets, so one descriptor serves any number of
/// responses at once.
///
/// Validated on every use: the statx of the path, which the checks before a send make anyway, must describe the
/// very version the descriptor was opened on (device, inode, size, mtime and ctime: <see cref="FileStatus.IsSameVersionAs"/>).
/// A file replaced (a deploy that renames a new version into place), rewritten or resized since is opened again,
/// and the old descriptor closes once the responses still sending it are done. A file truncated while it is sent
/// is caught as before (sendfile returns 0 early), cached or not.
///
/// Bounded: at most <see cref="Capacity"/> descriptors (never more than a quarter of the process's descriptor
/// limit); a file opened while the cache is full is served uncached. Descriptors unused for
/// <see cref="Inactive"/> are closed by a sweep, so a deleted file's space is not held for ever.
///
/// Each descriptor is reference-counted (<see cref="CachedFile"/>): the cache holds one reference, every response
/// using it one more, and the last to let go closes it.
/// </summary>
internal sealed class OpenFileCache : IDisposable
{
    /// <summary>
    /// How long an unused descriptor stays open: 60 s, nginx's <c>open_file_cache inactive</c> default. Long enough
    /// for a file requested now and then; short enough that a deleted file's space comes back within a minute.
    /// </summary>
    public static readonly TimeSpan DefaultInactive = TimeSpan.FromSeconds(60);

    /// <summary>At most this share of the descriptor limit goes to cached files: connections need the rest.</summary>
    private const int DescriptorLimitShare = 4;

    private readonly ConcurrentDictionary<string, CachedFile> _files = new(StringComparer.Ordinal);

    /// <summary>
    /// The entries in <see cref="_files"/>, slots taken before an entry is added: kept here because
    /// ConcurrentDictionary.Count takes every one of its locks, which every miss would pay.
    /// </summary>
    private int _count;
    private readonly Timer? _sweeper;
    private volatile bool _disposed;

    /// <param name="capacity">The most descriptors kept (0: none, every file is opened for its response and closed after).</param>
    /// <param name="inactive">How long an unused descriptor is kept.</param>
    /// <param name="syscalls">Where the descriptor limit is read (the default: the real system call).</param>
    public OpenFileCache(int capacity, TimeSpan inactive, Syscalls? syscalls = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        // A limit that cannot be read caps nothing; the limit itself is the count (int.MaxValue when unlimited).
        SyscallResult limit = (syscalls ?? Syscalls.Default).DescriptorLimit();
        Capacity = (int)Math.Min(capacity, limit.IsSuccess ? limit.Count / DescriptorLimitShare : int.MaxValue);
        Inactive = inactive;
        if (Capacity > 0)
        {
            // Half the inactive time: an unused descriptor is closed between one and one and a half times it.
            _sweeper = new Timer(static state => ((OpenFileCache)state!).Sweep(), this, inactive / 2, inactive / 2);
        }
    }

    /// <summary>The most descriptors kept: the configured size, capped by the descriptor limit.</summary>
    public int Capacity { get; }

    public TimeSpan Inactive { get; }

    /// <summary>The descriptors kept now.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Files opened (open(2)) so far, cached or not: the misses (for tests and diagnostics).</summary>
    public long Opens => Interlocked.Read(ref _opens);

    private long _opens;

    /// <summary>
    /// A reference to an open descriptor of <paramref name="path"/> at the version <paramref name="status"/>
    /// describes (the caller's statx of the path), cached or newly opened by <paramref name="open"/>; null (with the
    /// reason) when <paramref name="open"/> finds the file cannot go zero-copy. The caller releases it once its
    /// last system call on the descriptor is done. <paramref name="state"/> is passed to <paramref name="open"/>.
    /// </summary>
    public CachedFile? Acquire<TState>(string path, in FileStatus status, Func<string, TState, (FileDescriptorHandle? File, FileStatus Status, string? Reason)> open, TState state, out string? fallbackReason)
    {
        fallbackReason = null;
        if (_files.TryGetValue(path, out CachedFile? cached))
        {
            if (cached.Status.IsSameVersionAs(status) && cached.TryAddReference())
            {
                cached.Touch();
                return cached;
            }
            Evict(path, cached); // A stale version: whoever still sends it keeps it open until done.
        }

        (FileDescriptorHandle? file, FileStatus opened, fallbackReason) = open(path, state);
        Interlocked.Increment(ref _opens);
        if (file is null)
        {
            return null;
        }
        var fresh = new CachedFile(file, opened); // One reference: the caller's.
        // Kept only when it is the version the caller checked (the path may have changed between the two stats),
        // and while there is room; otherwise it serves this response and closes after it.
        if (!_disposed && opened.IsSameVersionAs(status) && TryTakeSlot() && fresh.TryAddReference())
        {
            if (!_files.TryAdd(path, fresh))
            {
                fresh.Release(); // Another request cached the path meanwhile: keep theirs, serve ours uncached.
                Interlocked.Decrement(ref _count);
            }
        }
        return fresh;
    }

    /// <summary>Takes one of the <see cref="Capacity"/> slots for a new entry; false when all are taken.</summary>
    private bool TryTakeSlot()
    {
        if (Interlocked.Increment(ref _count) <= Capacity)
        {
            return true;
        }
        Interlocked.Decrement(ref _count);
        return false;
    }

    /// <summary>Closes the descriptors unused for <see cref="Inactive"/> (those still sending close when done).</summary>
    public void Sweep()
    {
        long cutoff = Environment.TickCount64 - (long)Inactive.TotalMilliseconds;
        foreach (KeyValuePair<string, CachedFile> entry in _files)
        {
            if (entry.Value.LastUsed <= cutoff)
            {
                Evict(entry.Key, entry.Value);
            }
        }
    }

    /// <summary>Stops caching <paramref name="file"/> under <paramref name="path"/>, if it is cached there; its users keep it until done.</summary>
    public void Forget(string path, CachedFile file) => Evict(path, file);

    private void Evict(string path, CachedFile file)
    {
        // Only the entry seen: a newer one put in its place meanwhile stays.
        if (_files.TryRemove(new KeyValuePair<string, CachedFile>(path, file)))
        {
            Interlocked.Decrement(ref _count);
            file.Release(); // The cache's reference.
        }
    }

    /// <summary>Closes every cached descriptor; those still sending close when done. Later files are not cached.</summary>
    public void Dispose()
    {
        _disposed = true;
        _sweeper?.Dispose();
        foreach (KeyValuePair<string, CachedFile> entry in _files)
        {
            Evict(entry.Key, entry.Value);
        }
    }
}

/// <summary>
/// An open descriptor of one version of a file, shared by the cache and the responses sending it: closed when the
/// last reference is released. A reference is taken only while one is held (the count never comes back from 0).
/// </summary>
internal sealed class CachedFile
{
    private int _references = 1;
    private long _lastUsed = Environment.TickCount64;

    public CachedFile(FileDescriptorHandle handle, FileStatus status)
    {
        Handle = handle;
        Status = status;
        Residency = new ResidencyMemo(status.Size);
    }

    /// <summary>What the last probe of the whole file found, shared by every send of this descriptor.</summary>
    public ResidencyMemo Residency { get; }

    /// <summary>The descriptor: blocking, read-only. Not to be disposed by its users: <see cref="Release"/> it.</summary>
    public FileDescriptorHandle Handle { get; }

    /// <summary>The version of the file the descriptor was opened on (a statx of the descriptor).</summary>
    public FileStatus Status { get; }

    /// <summary>When a response last took it (Environment.TickCount64).</summary>
    public long LastUsed => Volatile.Read(ref _lastUsed);

    public void Touch() => Volatile.Write(ref _lastUsed, Environment.TickCount64);

    /// <summary>Takes a reference; false once the descriptor is closed or closing.</summary>
    public bool TryAddReference()
    {
        int references = Volatile.Read(ref _references);
        while (references > 0)
        {
            int seen = Interlocked.CompareExchange(ref _references, references + 1, references);
            if (seen == references)
            {
                return true;
            }
            references = seen;
        }
        return false;
    }

    /// <summary>Gives a reference back; the last one closes the descriptor.</summary>
    public void Release()
    {
        int left = Interlocked.Decrement(ref _references);
        if (left == 0)
        {
            Handle.Dispose();
        }
        else if (left < 0)
        {
            throw new InvalidOperationException("A cached file was released more often than it was taken.");
        }
    }
}
