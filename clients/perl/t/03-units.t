# The parts that need no gateway: broker URLs, AMQP field tables, failures, misuse.
use strict;
use warnings;

use Gateway::Client;
use Gateway::Worker;
use Test::More;

subtest 'broker URLs' => sub {
    my $parse = \&Gateway::Worker::parse_broker_url;
    is_deeply $parse->('amqp://guest:guest@127.0.0.1:5673/'),
        { host => '127.0.0.1', port => 5673, user => 'guest', pass => 'guest', vhost => '/' }, 'empty path: vhost /';
    is_deeply $parse->('amqp://u%40x:p%3Aw@rabbit:5680/clients-ab12'),
        { host => 'rabbit', port => 5680, user => 'u@x', pass => 'p:w', vhost => 'clients-ab12' }, 'a named vhost, escapes';
    is $parse->('amqp://h/%2F')->{vhost}, '/', 'vhost %2F';
    is $parse->('amqp://h/my%20vhost')->{vhost}, 'my vhost', 'an escaped vhost';
    is $parse->('amqp://h')->{port}, 5672, 'default port';
    eval { $parse->('http://h/') };
    like $@, qr/not an amqp/, 'croaks on another scheme';
};

subtest 'AMQP field tables with every RabbitMQ type' => sub {
    my $fields = join '',
        "\x01b", 'b', pack('c', -3),
        "\x01B", 'B', pack('C', 200),
        "\x01s", 's', pack('s>', -300),
        "\x01l", 'l', pack('q>', 1_700_000_000_000),
        "\x01d", 'd', pack('d>', 1.5),
        "\x01S", 'S', pack('N', 2), 'hi',
        "\x01V", 'V',
        "\x01A", 'A', pack('N', 2), 'b', pack('c', 1);
    my $octets = pack('N', length $fields) . $fields;
    is_deeply Net::AMQP::Common::unpack_field_table(\$octets),
        { b => -3, B => 200, s => -300, l => 1_700_000_000_000, d => 1.5, S => 'hi', V => undef, A => [1] },
        'decoded, through Net::AMQP itself';
    is $octets, '', 'and consumed';
};

subtest 'failures' => sub {
    my $failure = Gateway::Worker::Failure->new(code => 'refused', message => 'no');
    is_deeply $failure->body, { error => { code => 'refused', message => 'no' } }, 'the answer body';
    is "$failure", 'refused: no', 'stringifies';
    eval { Gateway::Worker::Failure->new(message => 'no code') };
    like $@, qr/code is required/, 'croaks without a code';
};

subtest 'misuse croaks' => sub {
    eval { Gateway::Client->new };
    like $@, qr/base_url is required/, 'no base_url';
    eval { Gateway::Client->new(base_url => 'ftp://x') };
    like $@, qr/http/, 'not http';
    my $client = Gateway::Client->new(base_url => 'http://127.0.0.1:1');
    eval { $client->submit('math.add') };
    like $@, qr/request body/, 'submit without a body';
    eval { $client->submit('', {}) };
    like $@, qr/op must be/, 'an empty op';
    eval { $client->call('math.add', {}, colour => 'red') };
    like $@, qr/unknown options: colour/, 'an unknown option';
    eval { $client->job('x', wait => 'soon') };
    like $@, qr/wait must be/, 'a bad wait';
    eval { $client->events('x', on_event => 1) };
    like $@, qr/code reference/, 'a bad on_event';
    eval { Gateway::Worker->new(broker_url => 'amqp://h/')->operation('x') };
    like $@, qr/code reference/, 'a worker handler that is not code';
    eval { Gateway::Worker->new(broker_url => 'amqp://h/')->run };
    like $@, qr/no operation/, 'running a worker with nothing to serve';
};

subtest 'transport failures are data' => sub {
    my $answer = Gateway::Client->new(base_url => 'http://127.0.0.1:1', timeout => 2)->ops;
    is $answer->{ok}, 0, 'not ok';
    is $answer->{status}, 599, 'status 599';
    is $answer->{error}{code}, 'transport_error', 'code transport_error';
};

done_testing;
