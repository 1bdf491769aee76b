using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using SpliceTransport.Interop;
using SpliceTransport.Transport;

namespace SpliceTransport.Files;

/// <summary>
/// Keeps disk reads off the event loops. sendfile(2) reads the page cache; a page that is not there is read
/// from disk inside the call, and the loop thread making it waits, with every other connection on that loop
/// (nginx has <c>aio threads</c> for this, Go a thread per blocked goroutine). So before each sendfile chunk
/// the send pump asks cachestat(2) whether the chunk's pages are all cached: one system call per chunk (at
/// most <see cref="SpliceTransportOptions.MaxSendFileChunkSize"/>), not per sendfile call. If not, the chunk
/// is read into the page cache first (<see cref="WarmAsync"/>), on threads kept for that
/// (<see cref="DiskThreads"/>), where a disk wait blocks no loop and no thread-pool worker, and the send goes
/// on from the cache.
///
/// Why pread into a buffer, and not readahead(2) or posix_fadvise(WILLNEED): both only start the reads and
/// return (and can still block on the file's metadata), so the pump would have to poll cachestat to know
/// when the pages came; pread returns exactly when they are there. The copy into the buffer it costs is
/// memory speed, next to a disk read, and only cold chunks pay it.
///
/// Cached is not yet readable. Readahead inserts its pages into the cache before their disk read is done
/// (locked, not up to date), and cachestat counts them as cached: with a read_ahead_kb of 8 MiB, as on this
/// project's VMs, the chunks after a warmed one are always "cached" while their reads are in flight, and a
/// sendfile on them waited up to 95 ms on the loop (strace, throttled disk). So a chunk cachestat calls cached
/// is also read one byte from its first and its last page with preadv2(RWF_NOWAIT), which fails with EAGAIN
/// on a page still being read instead of waiting for it. Readahead reads in file order and its I/O completes
/// about in that order, so a chunk whose two ends are readable is, in practice, readable throughout; a page
/// in between still being read costs one short wait, not a read from disk. (RWF_NOWAIT also says EAGAIN on
/// the one page where readahead marks "read more ahead": that chunk is warmed, which only costs a copy.)
///
/// Without cachestat (Linux before 6.5: ENOSYS) nothing is probed and sendfile may block on a cold file, as
/// before; that is logged once (event 203). preadv2(RWF_NOWAIT) alone could not replace it: it finds a
/// missing page only where it reads, and reading a whole chunk would copy every chunk, cached or not, which
/// would undo the zero copy.
/// </summary>
internal sealed class FileResidency
{
    /// <summary>
    /// The buffer the warming reads go through: large enough that a chunk takes few calls (a 2 MiB chunk is
    /// eight), small enough to come from the shared array pool.
    /// </summary>
    private const int WarmBufferSize = 256 * 1024;

    private static readonly long s_pageSize = Environment.SystemPageSize;

    private readonly Syscalls _syscalls;
    private readonly SpliceMetrics _metrics;
    private readonly ILogger _logger;
    private readonly DiskThreads _readThreads;
    private volatile bool _probeUnavailable;
    private volatile bool _readinessProbeUnavailable;

    public FileResidency(bool enabled, Syscalls syscalls, DiskThreads diskThreads, SpliceMetrics metrics, ILogger logger)
    {
        _readThreads = diskThreads;
        _probeUnavailable = !enabled;
        _syscalls = syscalls;
        _metrics = metrics;
        _logger = logger;
    }

    /// <summary>
    /// True when every page of <paramref name="count"/> bytes from <paramref name="offset"/> is in the page
    /// cache and the range's first and last pages are readable, or when that cannot be known (the probe is off
    /// or unavailable, or failed): then sendfile goes ahead as it would without the probe. False only when the
    /// kernel said some page is missing or still being read.
    /// </summary>
    public bool IsCached(SafeHandle file, long offset, long count)
    {
        if (_probeUnavailable || count <= 0)
        {
            return true;
        }
        // The pages the range touches: cachestat counts whole pages, from the one holding the first byte to
        // the one holding the last. Pages past the end of a file that shrank count as missing; the warming
        // read then ends early, and sendfile reports the truncation as it always does.
        long pages = (offset + count - 1) / s_pageSize - offset / s_pageSize + 1;
        if (pages == 1 && !_readinessProbeUnavailable)
        {
            // One page (most small static files): the one-byte RWF_NOWAIT read says all that cachestat would, and
            // also whether the page is read yet. One system call per response instead of two.
            return IsReadable(file, offset);
        }
        SyscallResult cached = _syscalls.CachedPages(file, offset, count);
        if (!cached.IsSuccess)
        {
            if (cached.Errno == Errno.ENOSYS)
            {
                _probeUnavailable = true;
                Log.CacheProbeUnavailable(_logger);
            }
            return true;
        }
        return cached.Count >= pages && IsReadable(file, offset) && (pages == 1 || IsReadable(file, offset + count - 1));
    }

    /// <summary>
    /// Whether the page holding <paramref name="offset"/> can be read now, without waiting for the disk: one
    /// byte through preadv2(RWF_NOWAIT). The end of the file counts as readable (sendfile reports a truncation
    /// itself); so does a file system that cannot say (EOPNOTSUPP), after which this probe is not made again.
    /// </summary>
    private bool IsReadable(SafeHandle file, long offset)
    {
        if (_readinessProbeUnavailable)
        {
            return true;
        }
        Span<byte> oneByte = stackalloc byte[1];
        SyscallResult read = _syscalls.ReadFileIfCached(file, oneByte, offset);
        if (read.WouldBlock)
        {
            return false;
        }
        if (read.IsUnsupported)
        {
            _readinessProbeUnavailable = true;
        }
        return true;
    }

    /// <summary>
    /// Reads <paramref name="count"/> bytes from <paramref name="offset"/> into the page cache on one of the
    /// <see cref="DiskThreads"/>, and completes, on the thread pool, when they are there. Stops early at the
    /// end of the file (sendfile then finds the truncation); a read error is returned, with its errno. The caller
    /// keeps <paramref name="file"/> open until the task completes.
    /// </summary>
    public Task<SyscallResult> WarmAsync(SafeHandle file, long offset, long count) =>
        _readThreads.RunAsync(() => Warm(file, offset, count));

    /// <summary>Threads started for cold reads so far (for tests).</summary>
    internal int ColdReadThreadCount => _readThreads.ThreadCount;

    /// <summary>
    /// The warming read itself, blocking until the pages are there: never on a loop thread, since this is the
    /// disk wait the loops must not make.
    /// </summary>
    private SyscallResult Warm(SafeHandle file, long offset, long count)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(WarmBufferSize, count));
        try
        {
            long read = 0;
            while (read < count)
            {
                SyscallResult result = _syscalls.ReadFile(file, buffer.AsSpan(0, (int)Math.Min(buffer.Length, count - read)), offset + read);
                if (!result.IsSuccess)
                {
                    return result;
                }
                if (result.Count == 0)
                {
                    break;
                }
                read += result.Count;
            }
            _metrics.ColdFileRead(read);
            return SyscallResult.Success(read);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
