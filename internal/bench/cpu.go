package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of CPU times in /proc/*/stat.
const clockTicks = 100

// cpuTimes is CPU time used so far, per part of the system: "harness" (this
// process: load generator, nats-server and SMTP sink), each latchkey role
// (its processes summed) and "postgres" (every PostgreSQL process on the
// machine, with the backends that already exited).
type cpuTimes map[string]time.Duration

// CPUShare is where a phase's CPU went: milliseconds of CPU per request
// (or email) by part, and how busy the machine's cores were.
type CPUShare struct {
	MsPerOp map[string]float64 `json:"cpu_ms_per_op"`
	Busy    float64            `json:"cores_busy_fraction"`
}

func (s *stack) cpuTimes() cpuTimes {
	t := cpuTimes{}
	// Not the harness's children: they are the latchkey processes, counted
	// by role while they run, and would be counted again once they exit.
	if d, err := procCPU("self", false); err == nil {
		t["harness"] = d
	}
	for _, p := range s.procs {
		if d, err := procCPU(strconv.Itoa(p.cmd.Process.Pid), false); err == nil {
			t[p.role] += d
		}
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || string(bytes.TrimSpace(comm)) != "postgres" {
			continue
		}
		// The postmaster's children times hold the backends that exited.
		if d, err := procCPU(filepath.Base(dir), true); err == nil {
			t["postgres"] += d
		}
	}
	return t
}

// procCPU reads user+system time of /proc/<pid>/stat, with the times of
// its exited children when children is set.
func procCPU(pid string, children bool) (time.Duration, error) {
	raw, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name, which may hold spaces.
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 {
		return 0, fmt.Errorf("unexpected /proc/%s/stat", pid)
	}
	f := bytes.Fields(raw[end+1:])
	// f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
	if len(f) < 15 {
		return 0, fmt.Errorf("unexpected /proc/%s/stat", pid)
	}
	last := 12
	if children {
		last = 14
	}
	var ticks int64
	for _, field := range f[11 : last+1] {
		n, err := strconv.ParseInt(string(field), 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// share turns the CPU used between before and after, over ops operations
// in elapsed wall time, into a CPUShare.
func share(before, after cpuTimes, ops int, elapsed time.Duration, cores int) CPUShare {
	out := CPUShare{MsPerOp: map[string]float64{}}
	var total time.Duration
	for part, t := range after {
		used := t - before[part]
		total += used
		if ops > 0 {
			out.MsPerOp[part] = float64(used.Microseconds()) / 1000 / float64(ops)
		}
	}
	if elapsed > 0 {
		out.Busy = total.Seconds() / (elapsed.Seconds() * float64(cores))
	}
	return out
}
