# The Perl worker on the wire: publish requests to its queue directly (as the gateway
# would) and read its answers from a reply queue of our own.
use strict;
use warnings;

use AnyEvent;
use AnyEvent::RabbitMQ;
use Gateway::Worker;
use JSON::PP ();
use Test::More;

plan skip_all => 'set GATEWAY_BROKER_URL (and run examples/perl/text_upper.pl)' unless $ENV{GATEWAY_BROKER_URL};
my $broker = Gateway::Worker::parse_broker_url($ENV{GATEWAY_BROKER_URL});
my $json = JSON::PP->new->utf8->canonical;

my %answers;    # correlation id => [type, body, user_id]
my $all_answered = AnyEvent->condvar;
my @requests = (['good', $json->encode({ text => 'wire' })], ['not-json', 'this is not JSON'], ['refused', $json->encode({ text => 'fail' })]);

my $connection = AnyEvent::RabbitMQ->new->load_xml_spec;
my $failed = sub { $all_answered->croak("AMQP: @_") };
$connection->connect(%$broker, timeout => 10, on_failure => $failed, on_read_failure => $failed, on_success => sub {
    $connection->open_channel(on_failure => $failed, on_success => sub {
        my ($channel) = @_;
        $channel->declare_queue(exclusive => 1, auto_delete => 1, on_failure => $failed, on_success => sub {
            my $reply_to = shift->method_frame->queue;
            $channel->consume(queue => $reply_to, no_ack => 1, on_failure => $failed, on_consume => sub {
                my ($message) = @_;
                my $id = $message->{header}->correlation_id;
                $answers{$id} = [$message->{header}->type, $message->{body}->payload, $message->{header}->user_id];
                $all_answered->send if keys %answers == @requests;
            }, on_success => sub {
                for my $request (@requests) {
                    my ($id, $body) = @$request;
                    $channel->publish(exchange => '', routing_key => 'text.upper', body => $body, header => {
                        correlation_id => "perl-wire-$id", reply_to => $reply_to, type => 'text.upper',
                        content_type => 'application/json', headers => { 'x-attempt' => 1 },
                    });
                }
            });
        });
    });
});

my $timeout = AnyEvent->timer(after => 30, cb => sub { $all_answered->croak('no answers within 30 s') });
$all_answered->recv;

is $answers{'perl-wire-good'}[0], 'result', 'a result answer';
is_deeply $json->decode($answers{'perl-wire-good'}[1]), { text => 'WIRE' }, 'with the result as body';
is $answers{'perl-wire-good'}[2], $broker->{user}, "and the worker's broker user as user_id (for --worker-users)";
is $answers{'perl-wire-not-json'}[0], 'error', 'a request that is not JSON: an error answer';
is $json->decode($answers{'perl-wire-not-json'}[1])->{error}{code}, 'invalid_request', 'invalid_request';
is $answers{'perl-wire-refused'}[0], 'error', 'a Failure: an error answer';
is_deeply $json->decode($answers{'perl-wire-refused'}[1]),
    { error => { code => 'refused', message => 'this worker refuses the text "fail"' } }, 'its code and message';

done_testing;
