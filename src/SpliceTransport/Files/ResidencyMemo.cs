namespace SpliceTransport.Files;

/// <summary>
/// What the last residency probe of a whole file found, kept with its open descriptor (the open-file cache's
/// entry), so that a file served again and again is not probed on every response: for
/// <see cref="FreshFor"/> after a probe found every page of the file in the page cache and readable, sends of it
/// skip the probe (one to three system calls each).
///
/// The risk taken: a page evicted within that time is read by sendfile on the loop, as it would be without the
/// probe. The page cache evicts the least recently used pages first, and these were used a moment ago, so that
/// takes a machine short of memory; it then costs one disk read on one loop, once: the next probe sees it.
/// </summary>
internal sealed class ResidencyMemo(long fileSize)
{
    /// <summary>
    /// One second: a hot file is probed about once a second instead of on every response (at 20,000 responses a
    /// second, 20,000 system calls saved for one made), and a file that goes cold is noticed within a second.
    /// </summary>
    public static readonly TimeSpan FreshFor = TimeSpan.FromSeconds(1);

    private long _residentUntil;

    /// <summary>The size of the file version the memo belongs to.</summary>
    public long FileSize { get; } = fileSize;

    /// <summary>True while a probe of the whole file found it resident less than <see cref="FreshFor"/> ago.</summary>
    public bool IsFresh => Environment.TickCount64 < Volatile.Read(ref _residentUntil);

    /// <summary>A probe of <paramref name="count"/> bytes from <paramref name="offset"/> found them resident: remembered if that is the whole file.</summary>
    public void Probed(long offset, long count)
    {
        if (offset == 0 && count >= FileSize)
        {
            Volatile.Write(ref _residentUntil, Environment.TickCount64 + (long)FreshFor.TotalMilliseconds);
        }
    }
}
