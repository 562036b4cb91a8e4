#!/usr/bin/env perl
# A Perl worker for tests/test_perl_worker.py, with three operations (names as arguments):
#   WAIT (long-running) works until it is cancelled, and prints "cancelled ID REASON";
#   SLOW (long-running) blocks for {"seconds": N} in a child (AnyEvent::Util::fork_call),
#        answering {"slept": N}: heartbeats must keep its short lease meanwhile;
#   ECHO (quick) prints "ran ID traceparent=HEADER trace_id=ID" and answers the request.
# Lines on STDOUT are what the test waits for.
#
#   GATEWAY_BROKER_URL=amqp://... perl tests/perl/worker.pl WAIT SLOW ECHO

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../clients/perl/lib";

use AnyEvent;
use AnyEvent::Util qw(fork_call);
use Gateway::Worker;
use IO::Handle;

my ($wait_op, $slow_op, $echo_op) = @ARGV;
die "usage: $0 WAIT-OP SLOW-OP ECHO-OP\n" unless defined $echo_op;
STDOUT->autoflush(1);

my $worker = Gateway::Worker->new(broker_url => $ENV{GATEWAY_BROKER_URL}, prefetch => 4);

$worker->operation($wait_op => sub {
    my ($request, $job) = @_;
    my $never = AnyEvent->condvar;
    $job->on_cancel(sub {
        my ($job, $reason) = @_;
        print "cancelled @{[ $job->id ]} $reason\n";
    });
    print "waiting @{[ $job->id ]}\n";
    return $never;
}, long_running => 1);

$worker->operation($slow_op => sub {
    my ($request, $job) = @_;
    my $done = AnyEvent->condvar;
    my $seconds = $request->{seconds};
    fork_call { sleep $seconds; return { slept => $seconds } }
        sub { @_ ? $done->send($_[0]) : $done->croak($@) };
    return $done;
}, long_running => 1);

$worker->operation($echo_op => sub {
    my ($request, $job) = @_;
    my $traceparent = $job->headers->{traceparent} // '';
    my $trace_id = $job->trace_id // '';
    print "ran @{[ $job->id ]} traceparent=$traceparent trace_id=$trace_id\n";
    return $request;
});

$worker->run;
